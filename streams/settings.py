"""All runtime settings in one typed place: environment variables (``ATALAIA_*``) and an
optional YAML file (``ATALAIA_CONFIG=path.yaml``); environment wins over the file."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "config"


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("ATALAIA_CONFIG")
        if not path:
            return {}
        import difflib

        from atalaia.streams.config_yaml import YamlError, load_file, located, plain

        tree = load_file(path)  # a bad file: YamlError "file:line:col: ..."
        data = plain(tree) or {}
        if not isinstance(data, dict):
            raise YamlError(path, 1, 1, "a settings file is a mapping of settings (http_port: 8080)")
        fields = set(Settings.model_fields)
        out = {}
        for key, value in data.items():
            # the variable's name works too (ATALAIA_HTTP_PORT, http-port): an unknown one is an
            # error at its line, never silently ignored
            name = key.strip().lower().removeprefix("atalaia_").replace("-", "_")
            if name not in fields:
                close = difflib.get_close_matches(name, sorted(fields), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise located(tree, path, (key,), f"unknown setting {key!r}{hint}", at="key")
            out[name] = value
        return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATALAIA_", extra="ignore")

    kafka: str | None = Field(None, description="bootstrap servers host:port[,..]; unset = embedded broker")
    topic_prefix: str = Field(
        "atalaia",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="topics are <prefix>.events, <prefix>.observations, ...",
    )
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(
        1,
        ge=1,
        description="replicas of each topic Atalaia creates (3 on a Kafka cluster; 1 on the embedded broker)",
    )
    app_id: str = "atalaia"
    data_dir: Path = Field(Path(".atalaia"), description="worker state, snapshots, SQLite projection")
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=1, le=65535)
    http_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names the HTTP server answers besides localhost and the console URL's "
        "('*': any); while it listens on a loopback address only these are answered (DNS rebinding)",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or CIDR networks of reverse proxies whose X-Forwarded-For names the client "
        "(sign-in limits and live-stream caps are per client); this machine's are always trusted",
    )
    console_url: str | None = Field(
        None,
        description="the console's public URL, for links in messages; unset = the escalation file's "
        "console_url, else this process's http://host:port",
    )
    mqtt_url: str | None = Field(
        None, description="mqtt://host:port/topic/# (mqtts:// for TLS) to subscribe for events"
    )
    # MQTT security (streams/ingest/mqtt.py): the password comes from a file, never from the URL or the environment
    mqtt_username: str | None = None
    mqtt_password_file: Path | None = Field(None, description="file holding the MQTT password")
    mqtt_ca_file: Path | None = Field(None, description="mqtts://: CA bundle (unset: the system's)")
    mqtt_cert_file: Path | None = Field(None, description="mqtts://: client certificate (mutual TLS)")
    mqtt_key_file: Path | None = None
    mqtt_check_hostname: bool = True
    mqtt_tenant: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[^|/\s\x00-\x1f\x7f]+$",
        description="file every MQTT observation under this tenant, whatever its body says (as an "
        "ingest token bound to a tenant does over HTTP); unset = the body's tenant, else none",
    )
    # Kafka security (streams/kafka_config.py), for ATALAIA_KAFKA; the embedded broker is plain text
    kafka_security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"
    )
    kafka_sasl_mechanism: str = Field("PLAIN", description="PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password_file: Path | None = Field(None, description="file holding the SASL password")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle (unset: the system's trust store)")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password_file: Path | None = None
    kafka_ssl_check_hostname: bool = True
    state_store: Literal["auto", "file", "kafka"] = Field(
        "auto",
        description="where stages keep their checkpoints: kafka = the compacted topics "
        "<prefix>.state.<stage> (no shared volume between workers), file = <data_dir>/state; auto = "
        "kafka on Apache Kafka, file on the embedded broker (Tansu keeps topics in memory, no compaction)",
    )
    ingest_log: bool = Field(
        True,
        description="on the embedded broker: keep every accepted event (and the observations stages "
        "hand to other partitions) in <data_dir>/ingest-log until the stages have checkpointed it, and "
        "put it back on the next run's broker (a kill -9 loses no answered event; not fsynced: a power "
        "cut may lose the last seconds); off: such events are lost with the in-memory topics",
    )
    checkpoint_s: float = Field(
        2.0, gt=0, le=3600, description="seconds between a stage partition's checkpoints (state + offsets)"
    )
    rules_paths: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [CONFIG_DIR / "rules"],
        description="rule directories and files: one path, several separated by "
        f"'{os.pathsep}', or a JSON list",
    )
    detectors_path: Path = CONFIG_DIR / "detectors.yaml"
    escalation_path: Path = CONFIG_DIR / "escalation.yaml"
    incidents_path: Path = CONFIG_DIR / "incidents.yaml"
    warnings_path: Path = CONFIG_DIR / "warnings.yaml"
    database_url: str | None = Field(
        None, description="SQL projection: postgresql://... ; unset = SQLite in data_dir"
    )
    console_users: Path | None = Field(
        None, description="YAML of API tokens → actor and role; unset = commands trusted as sent (demo only)"
    )
    ingest_tokens: Path | None = Field(
        None, description="YAML of hashed per-source ingest tokens (streams/httpauth.py); unset = open ingest"
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="workers without --http: serve /metrics, /health, /readyz, /livez on this port (on http_host)",
    )
    metrics_token_sha256: str | None = Field(
        None, description="SHA-256 of a bearer token required on /health and /metrics; unset = open"
    )
    database_schema: str | None = Field(
        None, description="PostgreSQL schema for the projection (default: public)"
    )
    max_payload_bytes: int = Field(1024 * 1024, ge=1, le=1 << 30)
    http_body_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="an HTTP body not received (or not decodable) within this time is refused (408)",
    )
    http_idle_s: float = Field(
        30.0,
        gt=0,
        allow_inf_nan=False,
        description="an HTTP connection that completes no request for this long is closed (headers that never end)",
    )
    http_max_connections: int | None = Field(
        None, ge=16, description="HTTP connections at most (default: half the file-descriptor limit)"
    )
    future_tolerance_s: float = Field(300.0, ge=0, allow_inf_nan=False)
    allowed_lateness_s: float = Field(300.0, ge=0, allow_inf_nan=False)
    rules_max_entities: int = Field(
        100_000,
        ge=0,
        description="entities of one tenant the rules of a worker hold state for at most; a new one "
        "beyond is refused to the DLQ (0: no limit)",
    )
    reorder_s: float = Field(
        5.0,
        ge=0,
        allow_inf_nan=False,
        description="label-keyed rules: event-time slack to restore time order",
    )
    reorder_idle_s: float = Field(
        2.0, gt=0, allow_inf_nan=False, description="label-keyed rules: release the reorder buffer when idle"
    )
    area_of_interest: tuple[float, float, float, float] = Field(
        (-9.6, 36.8, -6.1, 42.2),
        description="lon_min, lat_min, lon_max, lat_max (default: mainland Portugal)",
    )
    ops_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="atalaia up: the ops process (incidents, projection, escalation, delivery, warnings, "
        "console) runs this much nicer than the alarm path, which a storm then serves first (0 = equal)",
    )
    session_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    heartbeat_s: float = Field(1.0, gt=0, allow_inf_nan=False)
    fetch_wait_ms: int = Field(50, ge=0, le=60_000)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_interval_s: float = Field(
        60.0,
        ge=0,
        allow_inf_nan=False,
        description="repeated warnings/errors: one line per kind per interval, with a count (0 = off)",
    )
    fuse_ingest_rules: bool = Field(
        True, description="ingest and rules run as one stage when a worker runs both (rules/fused.py)"
    )
    # set by `atalaia up` for its child processes (streams/processes.py), not by users:
    peers: list[str] = Field(
        default_factory=list, description="other processes as NAME=URL (or URL) for /health and /metrics"
    )
    process_name: str = Field("worker", description="this process's name (atalaia up: alarms, ops)")
    console_upstream: str | None = Field(None, description="where the alarms process forwards console paths")
    reset_alert_s: float = Field(
        900.0,
        ge=0,
        allow_inf_nan=False,
        description="after a broker reset or truncation, /health stays degraded this long",
    )
    delivery_grace_s: float = Field(
        15.0,
        ge=0,
        le=60,
        allow_inf_nan=False,
        description="a graceful stop (SIGTERM, Ctrl-C) waits at most this long for the notifications "
        "being sent to be answered and recorded (a send cut off after it is in doubt at the next start; "
        "0: cut at once)",
    )
    broker_unreachable_s: float = Field(
        10.0,
        gt=0,
        allow_inf_nan=False,
        description="/health is failed while the broker has not answered this process's checks for this long",
    )
    health_max_behind_s: float = Field(
        120.0,
        ge=0,
        allow_inf_nan=False,
        description="/health is degraded while a stage's oldest unprocessed record has waited longer "
        "than this (sustained lag, not a storm worked through; 0: never)",
    )
    in_doubt_alert_s: float = Field(
        3600.0,
        ge=0,
        allow_inf_nan=False,
        description="/health stays degraded this long after a delivery is marked in doubt at a restart "
        "(0: never)",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        from atalaia.incidents.projection import url_problem

        problem = url_problem(v) if v else None
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("rules_paths", mode="before")
    @classmethod
    def _paths(cls, v: Any) -> Any:
        """A plain path (``/etc/atalaia/rules``), paths separated by ``os.pathsep``
        (``a:b``), or a JSON list (``["a", "b"]``)."""
        if not isinstance(v, str):
            return v
        text = v.strip()
        if text.startswith("["):
            import json

            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not a JSON list of paths ({exc})") from None
        paths = [p.strip() for p in text.split(os.pathsep) if p.strip()]
        if not paths:
            raise ValueError(
                f"no path: name rule directories or files (one path, several separated by '{os.pathsep}', "
                "or a JSON list)"
            )
        return paths

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        from atalaia.console.problem import proxy_networks

        proxy_networks(v)  # a bad entry: ValueError naming it
        return v

    @field_validator("area_of_interest")
    @classmethod
    def _area(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        lon0, lat0, lon1, lat1 = v
        if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
            raise ValueError(
                "must be lon_min, lat_min, lon_max, lat_max with min < max, lon in ±180, lat in ±90"
            )
        return v

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        return (init_settings, env_settings, _YamlSource(settings_cls), file_secret_settings)

    def projection_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'atalaia.db'}"

    def public_url(self) -> str:
        """Where people reach this console (links in SMS and email)."""
        if self.console_url:
            return self.console_url.rstrip("/")
        host = self.http_host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.getfqdn()
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.http_port}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


class SettingsError(ValueError):
    """Settings that cannot be used: one line per bad value, naming its environment variable."""


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"][:1])
        value = os.environ.get(f"ATALAIA_{name.upper()}")
        given = f"={value!r}" if value is not None else " (from ATALAIA_CONFIG)"
        lines.append(f"ATALAIA_{name.upper()}{given}: {str(err['msg']).removeprefix('Value error, ')}")
    return "bad settings:\n  " + "\n  ".join(lines)


def load_settings() -> Settings:
    """``Settings()`` with a :class:`SettingsError` (one line per bad value) instead of pydantic's
    report, and a settings file's own ``file:line:col`` error."""
    from atalaia.streams.config_yaml import YamlError

    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from None
    except YamlError as exc:
        raise SettingsError(f"ATALAIA_CONFIG: {exc}") from None
    except _SourceError as exc:  # a list or tuple setting whose variable is not JSON: raised while
        # reading the environment, before validation (so it is no ValidationError)
        raise SettingsError(_explain_source(exc)) from None


_SOURCE_FIELD = re.compile(r'field "([A-Za-z0-9_]+)"')


def _explain_source(exc: Exception) -> str:
    """pydantic-settings' "error parsing value for field ... from source ..." as one line naming
    the variable, its value and what it should look like."""
    found = _SOURCE_FIELD.search(str(exc))
    if found is None:
        return f"bad settings:\n  {str(exc)[:300]}"
    name = f"ATALAIA_{found[1].upper()}"
    value = os.environ.get(name)
    given = f"={value[:200]!r}" if value is not None else ""
    cause = exc.__cause__ or exc.__context__
    why = f" ({str(cause)[:200]})" if cause is not None else ""
    return f'bad settings:\n  {name}{given}: not valid JSON{why}; write a list as JSON, e.g. ["a", "b"]'


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


# ATALAIA_* variables the product reads itself, outside Settings (each named where it is read);
# a test keeps this list complete against the source
OTHER_VARIABLES = frozenset(
    {
        "ATALAIA_CONFIG",  # the settings file (above)
        "ATALAIA_DEMO_TOKEN",  # up --demo with your own ingest tokens (streams/commands.py)
        "ATALAIA_BROKER_LOG",  # the embedded broker's log (streams/broker.py)
        "ATALAIA_STAGE_TIMING",  # per-stage timing logs (streams/stage.py)
        "ATALAIA_UP_STARTUP_S",  # how long up waits for its processes to start
        "ATALAIA_YAML_MAX_BYTES",  # configuration file limits (streams/config_yaml.py)
        "ATALAIA_YAML_MAX_DEPTH",
        "ATALAIA_YAML_MAX_NODES",
        "ATALAIA_YAML_MAX_ALIASES",
        "ATALAIA_YAML_TIMEOUT_S",
        "ATALAIA_YAML_MAX_MEMORY_MB",
        "ATALAIA_CV_CACHE",  # atalaia detectors cv's score cache
        "ATALAIA_HYPOTHESIS",  # the test suite's property-test profile (tests/conftest.py)
        "ATALAIA_SOAK_KILLS",  # the soak suite's scales (tests/README.md)
        "ATALAIA_SOAK_FREEZE_S",
        "ATALAIA_SOAK_OUTAGE_S",
        "ATALAIA_FUZZ_EXAMPLES",
        "ATALAIA_SCREENSHOTS",  # the console tests' screenshots
        "ATALAIA_TEST_POSTGRES",  # the projection tests' PostgreSQL
        "ATALAIA_BIN",  # the tests' atalaia executable
        "ATALAIA_BROKER_RESTARTED",  # up to its processes: the embedded broker was restarted (guard.py)
        "ATALAIA_CONFIG_LAST_GOOD",  # up to a process it started on the last good configuration (lastgood.py)
    }
)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def unknown_variables(environ: Mapping[str, str], settings: Settings) -> list[str]:
    """One line per ``ATALAIA_*`` environment variable that nothing reads: not a setting, not one
    the product reads itself, not a ``${VAR}`` of the escalation or warnings file. A misspelt
    setting (the allowed lateness without its ``_S``) was silently ignored, and the default ran instead; the
    worker now says so at start, with the closest name. Not refused: the variable may be meant
    for another tool."""
    from difflib import get_close_matches

    known = {f"ATALAIA_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    for path in (settings.escalation_path, settings.warnings_path):
        try:
            if path.is_file() and path.stat().st_size <= 4 << 20:
                known |= set(_REFERENCE.findall(path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    lines = []
    # names are matched without case, as the settings read them (ATALAIA_http_port is applied)
    for name in sorted(n for n in environ if n.upper().startswith("ATALAIA_") and n.upper() not in known):
        close = get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(
            f"{name} is set but is not an Atalaia setting and no configuration file names it: ignored{hint}"
        )
    return lines
