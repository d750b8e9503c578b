"""``atalaia detectors ...``: list the configured detectors, run them over NAB."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import click

from atalaia.detectors.config import ConfigError, DetectorSpec, load_config


def _build(spec: DetectorSpec):
    return spec.build()


@click.group()
def detectors() -> None:
    """Online anomaly detectors (config/detectors.yaml)."""


@detectors.command("list")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="detectors YAML (default: config/detectors.yaml)",
)
def list_detectors(config_path: str | None) -> None:
    """Print the configured detectors."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for d in config.detectors:
        mark = "*" if d.name == config.default else " "
        sel = "/".join(x for x in (d.select.type, d.select.attribute) if x) or "-"
        click.echo(f"{mark} {d.name:14s} {d.model:9s} warmup={d.warmup:<4d} {sel:22s} {d.description}")


@detectors.command("nab")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--detector", "name", default=None, help="detector name (default: the config's default)")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="detectors YAML (default: config/detectors.yaml)",
)
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
        raise click.ClickException(str(exc).strip("'\"")) from None
    started = time.perf_counter()
    try:
        outs = run_nab(functools.partial(_build, spec), data_dir, out_dir, spec.name, workers)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{spec.name}: {len(outs)} result files in {out_dir} ({time.perf_counter() - started:.1f} s)")
