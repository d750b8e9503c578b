"""The ``atalaia`` command line. Each package contributes its own click group
(``atalaia.rules.cli:rules``, ``atalaia.detectors.cli:detectors`` ...), loaded lazily so that
``atalaia rules check`` never imports Faust."""

from __future__ import annotations

import importlib
import importlib.util

import click

# name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "up": "atalaia.streams.commands:up",
    "worker": "atalaia.streams.commands:worker",
    "console": "atalaia.streams.commands:console",
    "send": "atalaia.streams.commands:send",
    "tail": "atalaia.streams.commands:tail",
    "ingest": "atalaia.streams.ingest.cli:ingest",
    "tokens": "atalaia.streams.tokens:tokens",
    "users": "atalaia.console.users_cli:users",
    "bench": "atalaia.streams.commands:bench",
    "check": "atalaia.streams.preflight:check",
    "rules": "atalaia.rules.cli:rules",
    "detectors": "atalaia.detectors.cli:detectors",
    "incidents": "atalaia.incidents.cli:incidents",
    "notify": "atalaia.notifiers.cli:notify",
    "warnings": "atalaia.warnings.cli:warnings",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = []
        for name, target in SUBCOMMANDS.items():
            module = target.split(":")[0]
            try:
                if importlib.util.find_spec(module) is not None:
                    names.append(name)
            except ModuleNotFoundError:
                continue
        return names

    def invoke(self, ctx: click.Context) -> object:
        from atalaia.streams.settings import SettingsError

        try:
            return super().invoke(ctx)
        except SettingsError as exc:  # a bad ATALAIA_* value: its name and why, not a traceback
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:  # Kafka / MQTT security settings that cannot work: the same
            from atalaia.streams.kafka_config import KafkaConfigError

            if isinstance(exc, KafkaConfigError):
                raise click.ClickException(str(exc)) from None
            raise

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ModuleNotFoundError, AttributeError):
            return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="atalaia")
def main() -> None:
    """Atalaia: real-time alarm manager and civil-protection event processor."""


if __name__ == "__main__":  # pragma: no cover
    main()
