"""Labels and annotations are Jinja2 templates rendered in a sandbox (rule files are user input).

Rule files are hostile input: a template must neither stop the loader nor the running rules. Jinja
folds constant expressions at compile time (``{{ 7 ** 30000000 }}`` would hang ``rules check`` and
the worker's reload), so the operators that can build huge values (``*``, ``**``, ``%``, ``+``) are
intercepted (never folded) and bounded, as are the filters, ``str`` methods and format strings that
can: a template builds text and lists of at most :data:`MAX_TEXT` items and integers of at most
:data:`MAX_INT_BITS` bits; beyond, it fails (``<template error: …>`` at run time). Loops and ``~``
have no such hook in Jinja, so the parsed template is rewritten: every ``{% for %}`` iterates
through a counter (at most :data:`MAX_STEPS` iterations per render, nested loops included), every
``~`` checks the length it builds, and the rendered text stops at :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import contextvars
import functools
import operator
import re
import string
import time
import weakref
from typing import Any

from jinja2 import StrictUndefined, meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment

VARIABLES = (
    "entity",
    "key",
    "value",
    "severity",
    "labels",
    "rule",
    "type",
    "attributes",
    "state",
    "tenant",
    "values",
)

MAX_TEXT = 100_000  # characters of a string, items of a list a template may build
MAX_INT_BITS = 10_000  # bits of an integer a template may build (about 3 000 digits)
MAX_STEPS = 100_000  # loop iterations of one render, all loops together
MAX_WORK = 2_000_000  # items one render may touch: loop items, call and filter inputs and results
MAX_RENDER_S = 0.25  # CPU time of one render, checked at every loop item, call, filter and operator
#: the render in progress (set by ``Template.render``): [loop iterations left, work left, wall-clock
#: deadline, the thread's CPU time at the start]
_budget: contextvars.ContextVar[list[float]] = contextvars.ContextVar("template_budget")
#: the names the rewritten templates call (a template may not name anything that starts with _)
_LOOP, _CONCAT = "_atalaia_loop", "_atalaia_concat"
#: template constructs an annotation does not need and that would run outside the budget
#: (a block set or filter block, a macro body, is joined whole before anything checks it)
_REFUSED_NODES = {
    nodes.Macro: "macros",
    nodes.CallBlock: "call blocks",
    nodes.FilterBlock: "filter blocks",
    nodes.AssignBlock: "block assignments ({% set x %}...{% endset %})",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
}


def _new_budget() -> list[float]:
    return [float(MAX_STEPS), float(MAX_WORK), time.monotonic() + MAX_RENDER_S, time.thread_time()]


def _charge(n: int, step: bool = False) -> None:
    """Count ``n`` items of work (and a loop iteration) against the render's budget; refuse the
    render beyond it or past its deadline."""
    b = _budget.get(None)
    if b is None:  # outside Template.render (rules check's constant folding): sizes only
        return
    if step:
        b[0] -= 1
        if b[0] < 0:
            raise TemplateLimit(f"a template may run at most {MAX_STEPS} loop iterations per render")
    b[1] -= n
    if b[1] < 0:
        raise TemplateLimit(f"a template may touch at most {MAX_WORK} items per render")
    if time.monotonic() > b[2]:  # (a cheap clock first; the render's own CPU time decides)
        used = time.thread_time() - b[3]
        if used > MAX_RENDER_S:
            raise TemplateLimit(f"a template may take at most {MAX_RENDER_S:g} s to render")
        # the wall clock ran while this thread waited (a busy machine, another thread, a stop):
        # not the template's doing; look again when the rest of its CPU time could be spent
        b[2] = time.monotonic() + (MAX_RENDER_S - used)


def _size(x: Any) -> int:
    """Items a value holds, as far as it is cheap to know (0 for numbers and iterators)."""
    return len(x) if isinstance(x, str | bytes | list | tuple | dict | set | frozenset | range) else 0


def _payload(x: Any) -> int:
    """Characters or items a value holds, one level into a list or tuple (a list of long texts)."""
    if isinstance(x, list | tuple):
        return len(x) + sum(len(v) for v in x if isinstance(v, str | bytes | list | tuple))
    return _size(x)


_SEQUENCES = (str, bytes, list, tuple)
# printf-style conversions (``%-10.3f``, ``%(name)s``): width and precision
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")


class TemplateLimit(SecurityError):
    """A template would build a value over the limits (it is refused, never computed)."""


def _check_size(n: int, what: str = "text or a list") -> None:
    if n > MAX_TEXT:
        raise TemplateLimit(f"{what} of {n} items is over the limit of {MAX_TEXT} a template may build")


def _check_width(number: str, where: str) -> None:
    if number == "*":
        raise TemplateLimit(f"'*' widths are not allowed in templates ({where}): write the width as a number")
    if number and (len(number) > 7 or int(number) > MAX_TEXT):
        raise TemplateLimit(f"width or precision {number[:12]} in {where} is over the limit of {MAX_TEXT}")


def _check_percent_format(fmt: str) -> None:
    total = len(fmt)
    for m in _PERCENT_SPEC.finditer(fmt):
        for number in (m.group(1), m.group(2) or ""):
            _check_width(number, "a % format")
            total += int(number) if number.isdigit() else 0
    _check_size(total, "a formatted text (its widths together)")


def _check_str_format(fmt: str) -> None:
    total = len(fmt)
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec and "{" in spec:
            raise TemplateLimit("nested format specifications are not allowed in templates")
        for number in re.findall(r"[0-9]+", spec or ""):
            _check_width(number, "a format specification")
            total += int(number)
    _check_size(total, "a formatted text (its widths together)")


def _int_bits(x: Any) -> int:
    return abs(x).bit_length() if isinstance(x, int) else 0


def _pow(a: Any, b: Any) -> Any:
    huge = (
        isinstance(a, int) and isinstance(b, int) and b > 0 and b * (abs(a).bit_length() - 1) > MAX_INT_BITS
    )
    if huge:
        raise TemplateLimit(f"{a} ** {b} is over the limit of {MAX_INT_BITS}-bit integers in templates")
    _charge(1)
    return operator.pow(a, b)


def _mul(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        if _int_bits(a) + _int_bits(b) > MAX_INT_BITS:
            raise TemplateLimit(f"a product over the limit of {MAX_INT_BITS}-bit integers in templates")
    else:
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, _SEQUENCES) and isinstance(n, int):
                _check_size(_payload(seq) * max(n, 0), "a repetition")
                _charge(_payload(seq) * max(n, 0))
    return operator.mul(a, b)


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES):
        _check_size(_payload(a) + _payload(b), "a concatenation")
        _charge(_payload(a) + _payload(b))
    return operator.add(a, b)


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str | bytes):
        _check_percent_format(a if isinstance(a, str) else a.decode("latin-1"))
        out = operator.mod(a, b)
        _check_size(len(out), "a formatted text")
        _charge(len(out))
        return out
    return operator.mod(a, b)


def _loop(iterable: Any) -> Any:
    """The items of a ``{% for %}``, each counted against the render's budget."""
    for item in iterable:
        _charge(1, step=True)
        yield item


def _concat(*parts: Any) -> str:
    """``a ~ b ~ ...``, refused beyond :data:`MAX_TEXT` characters."""
    texts = [str(p) for p in parts]
    n = sum(len(t) for t in texts)
    _check_size(n)
    _charge(n)
    return "".join(texts)


def _charged(f: Any) -> Any:
    """A filter that counts its input and its result against the render's budget."""
    skip = 1 if getattr(f, "jinja_pass_arg", None) is not None else 0  # context/environment first

    @functools.wraps(f)  # keeps jinja_pass_arg
    def charged(*args: Any, **kwargs: Any) -> Any:
        _charge(1 + (_size(args[skip]) if len(args) > skip else 0))
        out = f(*args, **kwargs)
        _charge(_size(out))
        return out

    return charged


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with bounded operators, filters and ``str`` methods (see the module)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})  # also never folded at compile time
    _AMPLIFYING_METHODS = frozenset(
        {"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "format_map", "translate"}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binop_table.update({"**": _pow, "*": _mul, "+": _add, "%": _mod})
        _guard_filters(self.filters)
        for name, f in list(self.filters.items()):
            self.filters[name] = _charged(f)
        self.globals.update({_LOOP: _loop, _CONCAT: _concat})

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Every call (a function, a method, a macro) counts its inputs and its result."""
        _charge(1 + sum(_size(a) for a in args))
        out = super().call(__context, __obj, *args, **kwargs)
        _charge(_size(out))
        return out

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """The template's tree with every loop counted and every ``~`` bounded (see the module);
        constructs that would run outside the budget, and names starting with ``_``, are refused."""
        ast = super()._parse(source, name, filename)
        for node in ast.find_all((*_REFUSED_NODES, nodes.Name, nodes.For)):
            if isinstance(node, nodes.Name):
                why = f"names starting with '_' are not allowed in templates ({node.name!r})"
                if not node.name.startswith("_"):
                    continue
            elif isinstance(node, nodes.For):
                why = "recursive loops are not allowed in alarm templates"
                if not node.recursive:
                    continue
            else:
                why = f"{_REFUSED_NODES[type(node)]} are not allowed in alarm templates"
            raise TemplateSyntaxError(why, node.lineno, name, filename)
        for loop in ast.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_LOOP, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
        for concat in ast.find_all(nodes.Concat):
            concat.nodes = [
                nodes.Call(nodes.Name(_CONCAT, "load"), concat.nodes, [], None, None, lineno=concat.lineno)
            ]
        return ast

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, _SEQUENCES) and attr in self._AMPLIFYING_METHODS:
            return False  # their filters are bounded: |center |replace |join ...
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Any:
        fmt = super().wrap_str_format(value)
        if fmt is None:
            return None
        _check_str_format(value.__self__)

        def bounded(*args: Any, **kwargs: Any) -> str:
            out = fmt(*args, **kwargs)
            _check_size(len(out), "a formatted text")
            return out

        return bounded


def _guard_filters(filters: dict[str, Any]) -> None:
    """Bound the filters that can build more than their input (checked before building)."""

    def guard(name: str, check: Any) -> None:
        original = filters[name]

        @functools.wraps(original)  # keeps jinja_pass_arg (eval context / environment first)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            check(*args, **kwargs)
            return original(*args, **kwargs)

        filters[name] = guarded

    def replace(_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> None:
        s, old, new = str(s), str(old), str(new)
        k = s.count(old) if old else len(s) + 1
        if isinstance(count, int) and count >= 0:
            k = min(k, count)
        _check_size(len(s) + k * max(len(new) - len(old), 0), "a replacement")

    def center(value: Any, width: Any = 80) -> None:
        if isinstance(width, int):
            _check_size(width, "a centred text")

    def indent(s: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
        w = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        s = str(s)
        _check_size(len(s) + (s.count("\n") + 1) * max(w, 0), "an indented text")

    def wordwrap(env: Any, s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                 *args: Any, **kwargs: Any) -> None:  # fmt: skip
        wrap = wrapstring if wrapstring is not None else kwargs.get("wrapstring", env.newline_sequence)
        s = str(s)
        _check_size(len(s) + (len(s) + 1) * len(str(wrap)), "a wrapped text")

    def percent_format(value: Any, *args: Any, **kwargs: Any) -> None:
        _check_percent_format(str(value))

    def count_arg(value: Any, count: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(count, int):
            _check_size(count, "a batch or slice")

    for name, check in (
        ("replace", replace),
        ("center", center),
        ("indent", indent),
        ("wordwrap", wordwrap),
        ("format", percent_format),
        ("batch", count_arg),
        ("slice", count_arg),
    ):
        guard(name, check)
    original_join = filters["join"]

    @functools.wraps(original_join)
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
        if eval_ctx.autoescape:  # never here (autoescape is off); Jinja's own then
            return original_join(eval_ctx, value, d, attribute)
        if attribute is not None:
            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        sep, items, total = str(d), [], 0
        for item in value:
            text = str(item)
            total += len(text) + len(sep)
            _check_size(total, "a joined text")
            items.append(text)
        return sep.join(items)

    filters["join"] = join


_env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class Template:
    """A compiled label/annotation value. Plain text (no ``{``) is returned as is, without Jinja; text
    with only ``{{ variable }}`` substitutions is rendered as Jinja would (``str`` of each value) without
    Jinja's per-render context (they are rendered at every transition). A template that does not
    compile (``rules check`` refuses those: see :func:`template_problem`) renders its error."""

    __slots__ = ("__weakref__", "_error", "_parts", "_template", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._error: str | None = None
        self._template = None
        if "{" in source:
            try:
                self._template = _env.from_string(source)
            except Exception as exc:  # a template must never stop alarm processing
                self._error = f"<template error: {_describe(exc)}>"
        self._parts = _simple_parts(source) if self._template is not None else None

    def render(self, variables: dict[str, Any]) -> str:
        if self._template is None:
            return self._error or self.source
        parts = self._parts
        if parts is not None:
            try:
                return "".join([p if i % 2 == 0 else str(variables[p]) for i, p in enumerate(parts)])
            except Exception:  # a missing variable, a failing str(): Jinja says why
                pass
        token = _budget.set(_new_budget())
        try:
            out, size, template = [], 0, self._template
            for chunk in template.root_render_func(template.new_context(variables)):
                size += len(chunk)
                if size > MAX_TEXT:
                    raise TemplateLimit(f"a template may render at most {MAX_TEXT} characters")
                out.append(chunk)
            return "".join(out)
        except Exception as exc:  # a template must never stop alarm processing
            return f"<template error: {_describe(exc)}>"
        finally:
            _budget.reset(token)


_compiled: weakref.WeakValueDictionary[str, Template] = weakref.WeakValueDictionary()


def template(source: str) -> Template:
    """The compiled template of ``source``, shared: every rule, partition engine and reload that
    uses the same text holds one object (a template is immutable once built). Compiling is the
    bulk of building a rule (about 1 ms a template), so a reload of thousands of rules that share
    their annotations, on every partition of the stage, compiles each text once. Kept while a
    rule holds it."""
    got = _compiled.get(source)
    if got is None:
        got = _compiled[source] = Template(source)
    return got


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


_SUBSTITUTION = re.compile(r"\{\{ *([a-z]+) *\}\}")


def _simple_parts(source: str) -> list[str] | None:
    """[text, variable, text, variable, ..., text] when the template is plain text (no braces, no line
    breaks: nothing Jinja would read or rewrite) and ``{{ variable }}`` of known variables, else None."""
    parts = _SUBSTITUTION.split(source)
    if any(name not in VARIABLES for name in parts[1::2]):
        return None
    if any(c in text for text in parts[0::2] for c in "{}\r\n"):
        return None
    return parts


def template_problem(source: str) -> str | None:
    """A message for a template that cannot work (syntax error, unknown variable, one that does not
    compile), else None. Never raises: whatever goes wrong is the message."""
    try:
        ast: nodes.Template = _env.parse(source)
        declared = meta.find_undeclared_variables(ast)  # compiles: an unknown filter or test fails here
        _env.from_string(source)  # what the engine compiles
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message}"
    except RecursionError:
        return "template nested too deeply"
    except Exception as exc:
        return f"template does not compile: {_describe(exc)}"
    problem = _constant_problem(ast)
    if problem:
        return problem
    unknown = sorted(declared - set(VARIABLES))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], VARIABLES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; available: {', '.join(VARIABLES)}"
        return f"unknown template variable '{unknown[0]}'{hint}"
    return None


def _constant(node: nodes.Node) -> Any:
    """The value of an expression of literals, computed with the sandbox's bounded operators; raises
    ``nodes.Impossible`` for anything else (variables, filters, calls)."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.BinExpr) and node.operator in _env.binop_table:  # (not and / or)
        return _env.binop_table[node.operator](_constant(node.left), _constant(node.right))
    if isinstance(node, nodes.UnaryExpr) and node.operator in _env.unop_table:
        return _env.unop_table[node.operator](_constant(node.node))
    raise nodes.Impossible()


def _constant_problem(ast: nodes.Template) -> str | None:
    """An expression of literals that fails whenever the template renders (``{{ 7 ** 30000000 }}``,
    ``{{ 1 / 0 }}``): Jinja no longer folds them at compile time, so ``check`` computes them here."""
    for node in ast.find_all(nodes.BinExpr):
        try:
            _constant(node)
        except nodes.Impossible:
            continue
        except RecursionError:
            return "template nested too deeply"
        except Exception as exc:
            return f"template expression fails: {_describe(exc)}"
    return None
