"""The console's words (``t`` in console.js) put a value in as it is written: a silence comment, an
operator's reason or a station name holding ``$'``, ``$&`` or ``$` `` (a price, a shell snippet)
is shown as typed. ``String.replaceAll`` with a string read them as replacement patterns: the
incident page showed the comment "custo 5$' e $& e $`" as "custo 5 e {comment} e silenced by
s-1: "."""

from __future__ import annotations

from pathlib import Path

from tests.test_console_board import chromium  # noqa: F401  (fixture)

STATIC = Path(__file__).resolve().parent.parent / "console" / "static"


def test_a_value_is_put_in_as_written(chromium) -> None:  # noqa: F811
    page = chromium.new_page()
    try:
        page.set_content("<!doctype html><html><body></body></html>")
        page.add_script_tag(content=(STATIC / "console.js").read_text())
        said = page.evaluate(
            """() => {
              C.cat = {'sup.silenced': 'silenced by {silence}: {comment}', 'al.suppressed': 'suppressed: {why}'};
              return [
                t('sup.silenced', {silence: 's-1', comment: "custo 5$' e $& e $`"}),
                t('al.suppressed', {why: 'silenced by s-2: $$ cash'}),
                t('sup.silenced', {silence: 's-3', comment: 7}),
              ];
            }"""
        )
    finally:
        page.close()
    assert said == [
        "silenced by s-1: custo 5$' e $& e $`",
        "suppressed: silenced by s-2: $$ cash",
        "silenced by s-3: 7",
    ]
