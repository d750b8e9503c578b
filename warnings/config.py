"""Warning settings (``config/warnings.yaml``): where the levels and the CAOP areas come from, the
plausibility box for drawn polygons, and who may skip the second pair of eyes. Errors point at
``file:line:col``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from atalaia.warnings.catalogue import CONFIG, DEFAULT_AREAS, DEFAULT_LEVELS, Catalogue

DEFAULT_PATH = CONFIG / "warnings.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Approval(_Model):
    role: str = Field("approver", description="the role a second person needs to approve a warning")
    skip_for: tuple[str, ...] = Field(
        (), description="statuses issued without approval (only Exercise and/or Test are allowed)"
    )


class WarningsConfig(_Model):
    levels: Path = DEFAULT_LEVELS
    areas: tuple[Path, ...] = DEFAULT_AREAS
    region: tuple[float, float, float, float] | None = Field(
        (36.8, 42.2, -9.6, -6.1),
        description="lat_min, lat_max, lon_min, lon_max a drawn polygon must lie in (null: anywhere)",
    )
    approval: Approval = Approval()
    senders: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="tenant -> the CAP senders its warnings may carry (compared ignoring case); a "
        "tenant not named may use any sender not named for another tenant",
    )
    tenant_areas: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="tenant -> the geocode prefixes of its territory (DICOFRE/DICO, e.g. 1312 for "
        "Porto): its warnings' geocodes start with one, its drawn areas lie in its areas, and nobody "
        "else's geocodes start with one",
    )
    base_url: str = Field(
        "http://localhost:8080",
        description="public URL of the CAP feed and its alert links; unset in the file: the console's "
        "public URL (ATALAIA_CONSOLE_URL, else this server's http://host:port)",
    )
    feed_title: str = "Atalaia — avisos à população / public warnings"

    def catalogue(self) -> Catalogue:
        return Catalogue.load(self.levels, self.areas)

    def area_problems(self, draft: Any, tenant: Any, cat: Catalogue) -> list[tuple[tuple[Any, ...], str]]:
        """(location, message) for each part of ``draft``'s areas outside ``tenant``'s
        territory (``tenant_areas``): a geocode that starts with none of its prefixes (or, for
        another tenant's draft, with one of a listed tenant's), a drawn polygon or circle that
        reaches more than ``MARGIN_KM`` beyond the tenant's configured areas, or, for another
        tenant's draft, more than that into a listed tenant's (drawn areas follow no border
        exactly; ``warnings.territory``)."""
        import numpy as np

        from atalaia.warnings.draft import _CIRCLE, geocode_items
        from atalaia.warnings.territory import MARGIN_KM, Shape, territory

        if not self.tenant_areas:
            return []
        tenant = None if tenant is None else str(tenant)
        own = self.tenant_areas.get(tenant) if tenant is not None else None
        others = {t: p for t, p in self.tenant_areas.items() if t != tenant}
        mine = territory(cat, own) if own is not None else None
        theirs_all = {t: x for t, p in others.items() if (x := territory(cat, p)) is not None}
        out: list[tuple[tuple[Any, ...], str]] = []
        for i, a in enumerate(draft.area):
            at = ("area", i)
            for key, _kind, j, code in geocode_items(a):
                if own is not None and not code.startswith(own):
                    out.append(
                        (
                            (*at, "geocodes", key, j),
                            f"{code} is not in tenant {tenant!r}'s areas ({', '.join(own)}…)",
                        )
                    )
                elif own is None and (t := _claimed(code, others)):
                    out.append(
                        ((*at, "geocodes", key, j), f"{code} is in tenant {t!r}'s areas (tenant_areas)")
                    )
            if not (a.polygon or a.circle):
                continue
            shapes = [("polygon", Shape.drawn(poly)) for poly in a.polygon]
            for c in a.circle:
                if m := _CIRCLE.fullmatch(c):
                    shapes.append(("circle", Shape(centre=(float(m[1]), float(m[2])), km=float(m[3]))))
            edges = [shape.outline() for _, shape in shapes]
            if own is not None:
                if mine is None:  # (its prefixes name no configured area: nothing to hold a drawing to)
                    what = "polygon" if a.polygon else "circle"
                    out.append(((*at, what), f"tenant {tenant!r} has no configured areas to draw in"))
                    continue
                for (what, _), edge in zip(shapes, edges, strict=True):
                    if (far := mine.beyond(edge, MARGIN_KM)) is not None:
                        y, x = edge[far]
                        out.append(
                            (
                                (*at, what),
                                f"{y:.5g},{x:.5g} is outside tenant {tenant!r}'s areas "
                                f"(more than {MARGIN_KM:g} km beyond them)",
                            )
                        )
            for t, theirs in theirs_all.items():  # nobody else's drawing reaches into a listed tenant's
                for (what, shape), edge in zip(shapes, edges, strict=True):
                    probe = np.vstack([edge, theirs.grid(shape)])
                    if (deep := theirs.within(probe, MARGIN_KM)) is not None:
                        y, x = probe[deep]
                        out.append(
                            (
                                (*at, what),
                                f"the {what} covers tenant {t!r}'s areas (at {y:.5g},{x:.5g}; tenant_areas)",
                            )
                        )
        return out

    def tenancy_problems(
        self, draft: Any, sender: Any, tenant: Any, cat: Catalogue
    ) -> list[tuple[tuple[Any, ...], str]]:
        """(location, message) for what ``senders:`` and ``tenant_areas:`` refuse of a draft of
        ``tenant`` sent as ``sender`` (issuing refuses them; ``warnings render`` too)."""
        wrong_sender = self.sender_problem(sender, tenant)
        return ([(("sender",), wrong_sender)] if wrong_sender else []) + self.area_problems(
            draft, tenant, cat
        )

    def sender_problem(self, sender: Any, tenant: Any) -> str | None:
        """Why a warning of ``tenant`` may not carry ``sender`` (``senders:``), or None: a tenant
        named there sends only as its own senders, and nobody else sends as them."""
        if not self.senders or not isinstance(sender, str):
            return None
        key = sender_key(sender)
        tenant = None if tenant is None else str(tenant)
        own = self.senders.get(tenant) if tenant is not None else None
        if own is not None:
            if key not in {sender_key(s) for s in own}:
                return f"tenant {tenant!r} sends as {', '.join(own)} only (senders: in the warnings file)"
            return None
        for other, theirs in self.senders.items():
            if key in {sender_key(s) for s in theirs}:
                return f"sender {sender!r} is tenant {other!r}'s, or looks like it (senders: in the warnings file)"
        return None

    def model_post_init(self, _: object) -> None:
        bad = [s for s in self.approval.skip_for if s not in ("Exercise", "Test")]
        if bad:
            raise ValueError(f"approval.skip_for: only Exercise and Test may skip approval, not {bad}")
        for tenant in (*self.senders, *self.tenant_areas):
            if not tenant.strip() or tenant == "None":
                raise ValueError(f"{tenant!r} is not a tenant's name (senders:, tenant_areas:)")
        owner: dict[str, str] = {}
        for tenant, senders in self.senders.items():
            if not senders:
                raise ValueError(
                    f"senders.{tenant}: name at least one sender (an empty list sends as nobody)"
                )
            for s in senders:
                if not s or re.search(r"[\s,<&]", s):
                    raise ValueError(
                        f"senders.{tenant}: {s!r} is not a CAP sender (no spaces, commas, '<' or '&': "
                        "the address alone)"
                    )
                first = owner.setdefault(sender_key(s), tenant)
                if first != tenant:
                    raise ValueError(f"senders.{tenant}: {s!r} is tenant {first!r}'s too (or looks like it)")
        claimed: dict[str, str] = {}
        for tenant, prefixes in self.tenant_areas.items():
            if not prefixes:
                raise ValueError(f"tenant_areas.{tenant}: name at least one geocode prefix")
            for p in prefixes:
                if not re.fullmatch(r"[0-9]{1,6}|PT[0-9A-Z]{1,3}", p):
                    raise ValueError(
                        f"tenant_areas.{tenant}: {p!r} is not a geocode prefix (DICOFRE/DICO digits, "
                        "e.g. 1312, or an EMMA_ID like PT11A)"
                    )
                for q, other in claimed.items():
                    if other != tenant and (p.startswith(q) or q.startswith(p)):
                        raise ValueError(
                            f"tenant_areas.{tenant}: {p!r} overlaps tenant {other!r}'s {q!r}: an area is one tenant's"
                        )
                claimed[p] = tenant


def load_config(path: str | Path | None = None, public_url: str | None = None) -> WarningsConfig:
    """The settings of ``path`` (default ``config/warnings.yaml`` when it exists); relative paths
    in it are relative to the file. ``public_url`` (the server's, ``Settings.public_url()``) is
    the feed's base URL unless the file sets ``base_url``."""
    from atalaia.rules.errors import RuleError, RuleFileError
    from atalaia.rules.loader import load_model
    from atalaia.streams.config_yaml import YamlError, read_text

    p = Path(path) if path else DEFAULT_PATH
    if path is None and not p.exists():
        return WarningsConfig(**({"base_url": public_url} if public_url else {}))
    try:
        text = read_text(p)  # within the safe-loading size limit
    except YamlError as exc:
        raise RuleFileError([RuleError(exc.file, exc.line, exc.col, exc.message)]) from None
    cfg = load_model(text, str(p), WarningsConfig)
    base = p.resolve().parent
    update: dict[str, Any] = {
        "levels": cfg.levels if cfg.levels.is_absolute() else base / cfg.levels,
        "areas": tuple(a if a.is_absolute() else base / a for a in cfg.areas),
    }
    if public_url and "base_url" not in cfg.model_fields_set:
        update["base_url"] = public_url  # links where people reach this server
    return cfg.model_copy(update=update)


def _claimed(code: str, tenants: dict[str, tuple[str, ...]]) -> str | None:
    """The tenant whose territory ``code`` names or covers: one of its prefixes starts ``code``
    (a parish of it), or ``code`` starts one of them (a municipality holding its parishes)."""
    for tenant, prefixes in tenants.items():
        if any(code.startswith(p) or p.startswith(code) for p in prefixes):
            return tenant
    return None


def sender_key(sender: str) -> str:
    """A CAP sender as it looks (``streams.lookalike``: case, width, look-alike letters and
    invisible characters do not make another sender; nor does a domain's closing dot)."""
    from atalaia.streams.lookalike import skeleton

    return skeleton(sender.strip()).rstrip(".")
