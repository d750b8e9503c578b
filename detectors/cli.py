"""``atalaia detectors ...``: list the configured detectors, run them over NAB."""

from __future__ import annotations

import functools
import math
import statistics
import time
from pathlib import Path

import click

from atalaia.detectors.config import ConfigError, DetectorSpec, load_config


def _build(spec: DetectorSpec):
    return spec.build()


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="detectors YAML (default: config/detectors.yaml)",
)


def _message(exc: Exception) -> str:
    """An error's text for the user (a KeyError's str() is its repr, in quotes)."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _named(config, names: tuple[str, ...]) -> list[DetectorSpec]:
    """The configurations ``names`` asks for, once each, in order (none: the default)."""
    return list({s.name: s for s in (config.get(n) for n in (names or (None,)))}.values())


@click.group()
def detectors() -> None:
    """Online anomaly detectors (config/detectors.yaml)."""


@detectors.command("list")
@config_option
def list_detectors(config_path: str | None) -> None:
    """Print the configured detectors."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    rows = [
        (
            "*" if d.name == config.default else " ",
            d.name,
            d.model,
            f"warmup={d.warmup}",
            "/".join(x for x in (d.select.type, d.select.attribute) if x) or "-",
            d.description,
        )
        for d in config.detectors
    ]
    # columns as wide as their widest value (model names run from 3 to 15 characters)
    widths = [max(len(r[i]) for r in rows) for i in range(1, 5)] if rows else [0] * 4
    name_w = max([widths[0], *(len(old) for old in config.aliases)])
    for mark, name, model, warmup, sel, description in rows:
        click.echo(
            f"{mark} {name:{name_w}s}  {model:{widths[1]}s}  {warmup:{widths[2]}s}  {sel:{widths[3]}s}  {description}"
        )
    for old, alias in config.aliases.items():
        click.echo(f"  {old:{name_w}s}  deprecated alias of {alias.to}: {alias.note}")


@detectors.command("nab")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--detector", "name", default=None, help="detector name (default: the config's default)")
@config_option
@click.option("--workers", type=int, default=None, help="processes (default: up to 2)")
def nab(
    data_dir: Path, out_dir: Path, name: str | None, config_path: str | None, workers: int | None
) -> None:
    """Write NAB result CSVs (timestamp,value,anomaly_score) for every CSV under DATA_DIR.

    Output: OUT_DIR/<category>/<detector>_<file>.csv; score them with
    `python ../shared/nab/nabscore.py OUT_DIR`.
    """
    from atalaia.detectors.nab import run_nab

    try:
        config = load_config(config_path)
        spec = config.get(name)
    except (ConfigError, KeyError) as exc:
        raise click.ClickException(_message(exc)) from None
    started = time.perf_counter()
    try:
        outs = run_nab(functools.partial(_build, spec), data_dir, out_dir, spec.name, workers)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{spec.name}: {len(outs)} result files in {out_dir} ({time.perf_counter() - started:.1f} s)")


@detectors.command("cv")
@click.argument("nab_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--folds", type=int, default=5, show_default=True, help="number of file-level folds")
@click.option(
    "--detector",
    "names",
    multiple=True,
    help="configuration(s) to cross-validate (repeatable; default: the config's default). "
    "With several, a last row also selects among them per fold on the training files.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the fold split")
@click.option(
    "--repeats", type=int, default=1, show_default=True, help="fold splits (seeds seed, seed+1, ...)"
)
@click.option(
    "--threshold-mode",
    type=click.Choice(["flat", "best"]),
    default="flat",
    show_default=True,
    help="flat: centre of the best ±0.03 threshold region on the training files; best: NAB's peak",
)
@click.option("--files", default=None, help="only these data files (comma-separated names or stems)")
@config_option
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="score-stream cache (default: $ATALAIA_CV_CACHE or /tmp/atalaia-cv-cache)",
)
@click.option("--no-cache", is_flag=True, help="do not read or write the score cache")
@click.option(
    "--loco",
    is_flag=True,
    help="also leave one category (NAB folder) out: pooled held-out score and the worst category",
)
@click.option(
    "--around",
    type=float,
    default=None,
    help="also print the held-out standard score with each fold's threshold moved by -A, -A/2, +A/2, +A",
)
@click.option("--verbose", "-v", is_flag=True, help="per-fold lines")
def cv(
    nab_dir: Path | None,
    folds: int,
    names: tuple[str, ...],
    seed: int,
    repeats: int,
    threshold_mode: str,
    files: str | None,
    config_path: str | None,
    cache_dir: Path | None,
    no_cache: bool,
    loco: bool,
    around: float | None,
    verbose: bool,
) -> None:
    """File-level k-fold cross-validation over a NAB kit (default ../shared/nab).

    Per fold, each profile's threshold (and, with several detectors, the configuration) is
    chosen on the training files only; the held-out files are scored at it with the kit's
    nabscore.py. Prints the held-out score's mean ± sd over folds (standard, low-FP, low-FN),
    held-out TP/FN/FP, and, only beside it, the score on all files with the threshold optimised
    on them (NAB's figure) and at the threshold the configuration ships with. SE is the
    standard error of the standard mean (sd / sqrt(folds)), for the one-standard-error rule.
    """
    from atalaia.detectors import cv as cvmod

    try:
        config = load_config(config_path)
        specs = _named(config, names)
        kit = cvmod.Kit.load(nab_dir, files.split(",") if files else None)
        fold_sets = [cvmod.make_folds(kit.rels, folds, seed + r) for r in range(repeats)]
    except (ConfigError, KeyError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(_message(exc)) from None
    except Exception as exc:  # the kit's scorer raises its own NabError
        if type(exc).__name__ != "NabError":
            raise
        raise click.ClickException(str(exc)) from None
    cache = cvmod.ScoreCache(None if no_cache else (cache_dir or cvmod.DEFAULT_CACHE))
    n_windows = sum(len(t.windows) for t in kit.truths.values())
    click.echo(
        f"NAB kit {kit.nab_dir}: {len(kit.rels)} files, {n_windows} windows; {folds} folds x "
        f"{repeats} split(s) from seed {seed}; thresholds: {threshold_mode}"
    )
    streams: dict[str, dict] = {}
    for spec in specs:
        started = time.perf_counter()
        streams[spec.name] = cvmod.score_all(kit, spec, cache)
        click.echo(f"  scored {spec.name} ({time.perf_counter() - started:.1f} s)", err=True)

    rows = [(name, {name: s}) for name, s in streams.items()]
    if len(streams) > 1:
        rows.append(("selected per fold", streams))
    header = (
        f"{'configuration':24s} {'CV standard':>13s} {'CV low-FP':>13s} {'CV low-FN':>13s} "
        f"{'SE':>4s} {'held-out TP/FN/FP':>18s} {'pooled':>7s} | {'all files (opt.)':>16s} "
        f"{'shipped thr':>17s}" + (f" | {'LOCO pooled':>11s} {'LOCO worst category':>28s}" if loco else "")
    )
    click.echo(header)
    for label, cands in rows:
        results = [cvmod.cross_validate(kit, cands, fs, label, threshold_mode) for fs in fold_sets]
        every = [f for r in results for f in r.folds]

        def ms(profile: str, every=every) -> str:
            # a fold of files without windows has no normalised score (NAB: perfect == null)
            xs = [f.profiles[profile]["score"] for f in every if f.profiles[profile]["score"] is not None]
            if not xs:
                return "n/a"
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            return f"{statistics.fmean(xs):6.1f} ± {sd:4.1f}"

        tp, fn, fp = (sum(r.counts()[k] for r in results) / repeats for k in range(3))
        pooled = statistics.fmean(r.pooled["standard"]["score"] for r in results)
        full, shipped = "", ""
        if len(cands) == 1:
            full_res = cvmod.full_score(kit, next(iter(cands.values())), ["standard"])["standard"]
            full = f"{full_res['score']:6.1f} @{full_res['threshold']:.3f}"
            thr = config.get(label).threshold
            if thr is not None:
                s = cvmod.fixed_threshold_score(kit, next(iter(cands.values())), thr)
                shipped = f"{s['score']:6.1f} @{thr:.3f} fp{s['fp']}"
        counts = f"{tp:.0f}/{fn:.0f}/{fp:.0f}" if repeats == 1 else f"{tp:.1f}/{fn:.1f}/{fp:.1f}"
        std = [f.profiles["standard"]["score"] for f in every if f.profiles["standard"]["score"] is not None]
        se = statistics.stdev(std) / math.sqrt(folds) if len(std) > 1 else 0.0
        extra = ""
        if loco:
            cats = cvmod.category_folds(kit.rels)
            res = cvmod.cross_validate(kit, cands, cats, label, threshold_mode, ("standard",))
            scored = [
                (cvmod.category_of(files[0]), f.profiles["standard"])
                for f, files in zip(res.folds, cats, strict=True)
                if f.profiles["standard"]["score"] is not None
            ]
            cat, worst = min(scored, key=lambda cp: cp[1]["score"])
            worst_s = f"{cat} {worst['score']:.1f} fp{worst['fp']}"
            extra = f" | {res.pooled['standard']['score']:11.1f} {worst_s:>28s}"
        click.echo(
            f"{label:24s} {ms('standard'):>13s} {ms('reward_low_FP_rate'):>13s} "
            f"{ms('reward_low_FN_rate'):>13s} {se:4.1f} {counts:>18s} {pooled:7.1f} | {full:>16s} "
            f"{shipped:>17s}{extra}"
        )
        if around and len(cands) == 1:
            stream = next(iter(cands.values()))
            shifts = (-around, -around / 2, around / 2, around)
            at = []
            for d in shifts:
                xs = [cvmod.held_out_shifted(kit, r, stream, d) for r in results]
                xs = [x for x in xs if x is not None]
                at.append(f"{d:+.3f}: {statistics.fmean(xs):.1f}" if xs else f"{d:+.3f}: n/a")
            click.echo(f"    held-out standard with the threshold moved {', '.join(at)}")
        if verbose or len(cands) > 1:
            for r in results:
                for f in r.folds:
                    p = f.profiles["standard"]
                    click.echo(
                        f"    fold {f.fold}: {f.chosen:20s} thr {p['threshold']:.4f} "
                        f"score {p['score'] if p['score'] is None else round(p['score'], 1)!s:>6s} tp/fn/fp {p['tp']}/{p['fn']}/{p['fp']}  "
                        f"{len(f.held_out)} files"
                    )


def _thresholded(
    config_path: str | None, names: tuple[str, ...], threshold: float | None
) -> list[DetectorSpec]:
    """The configurations asked for, each with a threshold (its own or ``--threshold``)."""
    from atalaia.detectors.null import check_threshold

    try:
        specs = _named(load_config(config_path), names)
        if threshold is not None and not 0.0 <= threshold <= 1.0:  # (NaN passes click's range)
            raise ValueError(f"--threshold must be between 0 and 1, not {threshold}")
        for spec in specs:
            check_threshold(spec, threshold)
    except (ConfigError, KeyError, ValueError) as exc:
        raise click.ClickException(_message(exc)) from None
    return specs


_DETECTOR_NAMES = click.option(
    "--detector",
    "names",
    multiple=True,
    help="configuration(s) to run (repeatable; default: the config's default)",
)
_THRESHOLD = click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="alarm threshold (default: each configuration's shipped threshold)",
)


@detectors.command("null")
@_DETECTOR_NAMES
@_THRESHOLD
@click.option("--days", type=click.IntRange(3, 366), default=14, show_default=True, help="days per series")
@click.option("--seeds", type=click.IntRange(1, 100), default=20, show_default=True, help="series per family")
@config_option
def null(
    names: tuple[str, ...], threshold: float | None, days: int, seeds: int, config_path: str | None
) -> None:
    """False alarms on anomaly-free synthetic series, per sensor per week.

    Each family (white noise, heavy tails, bursts, cycles, counts, a stepping sensor, routine
    dropouts, a flat line, ...; detectors/null.py) holds no anomaly by construction, so every
    alarm after the first two days is one an operator would be paged for in vain. Independent
    of the NAB files: nothing was tuned on these series.
    """
    from atalaia.detectors import null as nullmod

    specs = _thresholded(config_path, names, threshold)
    click.echo(
        f"alarms per sensor per week on anomaly-free series ({days} days of 5-minute readings, "
        f"{seeds} series per family, the first 2 days not counted)"
    )
    width = max(len(f.name) for f in nullmod.FAMILIES)
    rows = {}
    for spec in specs:
        started = time.perf_counter()
        rows[spec.name] = nullmod.per_week(spec, threshold, days, seeds)
        click.echo(f"  ran {spec.name} ({time.perf_counter() - started:.1f} s)", err=True)
    cols = [(s.name, threshold if threshold is not None else s.threshold) for s in specs]
    click.echo(f"{'family':{width}s} " + " ".join(f"{f'{n} @{t:g}':>24s}" for n, t in cols) + "  what")
    for family in nullmod.FAMILIES:
        cells = " ".join(f"{rows[n][family.name]:24.2f}" for n, _ in cols)
        click.echo(f"{family.name:{width}s} {cells}  {family.what}")
    means = " ".join(f"{statistics.fmean(rows[n].values()):24.2f}" for n, _ in cols)
    click.echo(f"{'mean':{width}s} {means}")


@detectors.command("faults")
@_DETECTOR_NAMES
@_THRESHOLD
@click.option("--days", type=click.IntRange(8, 366), default=14, show_default=True, help="days per series")
@click.option("--seeds", type=click.IntRange(1, 100), default=5, show_default=True, help="series per family")
@click.option(
    "--window",
    type=click.IntRange(1, 10_000),
    default=144,
    show_default=True,
    help="readings after the onset within which an alarm counts as a detection (144: 12 h)",
)
@config_option
def faults(
    names: tuple[str, ...],
    threshold: float | None,
    days: int,
    seeds: int,
    window: int,
    config_path: str | None,
) -> None:
    """Sensor faults injected into anomaly-free synthetic series: detected, by chance, how soon.

    One fault per series (a spike, a dip, a level step up or down, a drift, a noisier sensor, a
    frozen one, a dead one reading 0; sized by the series' own spread; detectors/faults.py) into
    the families of `atalaia detectors null` but the constant, and four contextual ones (the
    daily cycle stops or runs late, a quieter sensor, a course twice as fast) into the families
    that can show them. A detection is an alarm within
    WINDOW readings of the onset; "by chance" is how often the same windows without the fault
    hold an alarm. Independent of the NAB files: nothing was tuned on these faults.
    """
    from atalaia.detectors import faults as faultmod

    specs = _thresholded(config_path, names, threshold)
    click.echo(
        f"faults detected within {window} readings of their onset ({days} days of 5-minute readings, "
        f"{seeds} series in each of {len(faultmod.HOSTS)} families, one fault per series)"
    )
    rows = {}
    for spec in specs:
        started = time.perf_counter()
        rows[spec.name] = faultmod.detection(spec, threshold, days, seeds, window=window)
        click.echo(f"  ran {spec.name} ({time.perf_counter() - started:.1f} s)", err=True)
    cols = [(s.name, threshold if threshold is not None else s.threshold) for s in specs]
    width = max(len(f.name) for f in faultmod.FAULTS)
    click.echo(f"{'fault':{width}s} " + " ".join(f"{f'{n} @{t:g}':>36s}" for n, t in cols) + "  what")

    def cell(r) -> str:
        delay = "-" if r.delay is None else f"{r.delay * faultmod.STEP.total_seconds() / 60:g} min"
        return f"{r.detected:5.0%} (chance {r.chance:3.0%}) {delay:>9s}"

    for fault in faultmod.FAULTS:
        cells = " ".join(f"{cell(rows[n][fault.name]):>36s}" for n, _ in cols)
        hosts = "" if fault.hosts is None else f" (in: {', '.join(fault.hosts)})"
        click.echo(f"{fault.name:{width}s} {cells}  {fault.what}{hosts}")
    means = " ".join(
        f"{f'{statistics.fmean(r.detected for r in rows[n].values()):.0%} detected':>36s}" for n, _ in cols
    )
    click.echo(f"{'mean':{width}s} {means}")
