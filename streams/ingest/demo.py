"""The demo feed: real sensor data replayed as NGSI-LD notifications through the real HTTP
ingest endpoint, as an Orion-LD subscription would deliver them.

* A real pipeline flow sensor: river's bundled ``WaterFlow`` data set (hourly litres per second,
  with maintenance drops and a pumping peak), replayed one hour per second, as Porto's water
  utility main ``urn:ngsi-ld:WaterObserved:porto-adutora-nova-sintra``.
* Douro river-level gauges (Ribeira, Freixo, Foz) following a semi-diurnal tide, with a flood
  wave that crosses the warning levels every few minutes.
* Air-quality stations (NO2, PM10, PM2.5) in Porto parishes with a rush-hour cycle and noise,
  and a rain gauge; one station goes silent for a while (absence rules).
Event time is the wall clock, so live rules and timers behave as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from mode import Service

from atalaia.streams.clock import format_time

log = logging.getLogger(__name__)

CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"

GAUGES = [  # id, name, parish, lon, lat, base level (m)
    (
        "porto-douro-ribeira",
        "Douro - Cais da Ribeira",
        "União de Freguesias do Centro Histórico do Porto",
        -8.6131,
        41.1406,
        2.2,
    ),
    ("porto-douro-freixo", "Douro - Freixo", "Campanhã", -8.5736, 41.1445, 2.0),
    (
        "porto-douro-foz",
        "Douro - Foz",
        "União de Freguesias de Aldoar, Foz do Douro e Nevogilde",
        -8.6745,
        41.1487,
        1.8,
    ),
]
AIR = [
    ("porto-aq-campanha", "Campanhã", -8.5853, 41.1496),
    ("porto-aq-paranhos", "Paranhos", -8.6035, 41.1718),
    ("porto-aq-boavista", "União de Freguesias de Lordelo do Ouro e Massarelos", -8.6321, 41.1562),
]


def _prop(value: Any, observed: str, unit: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"type": "Property", "value": value, "observedAt": observed}
    if unit:
        p["unitCode"] = unit
    return p


def _entity(
    kind: str,
    sid: str,
    name: str,
    parish: str,
    lon: float,
    lat: float,
    observed: str,
    measures: dict[str, tuple[float, str]],
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "id": f"urn:ngsi-ld:{kind}:{sid}",
        "type": kind,
        "name": {"type": "Property", "value": name},
        "district": {"type": "Property", "value": "13"},
        "parish": {"type": "Property", "value": parish},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
    }
    for attr, (value, unit) in measures.items():
        e[attr] = _prop(round(value, 3), observed, unit)
    return e


def notification(entities: list[dict[str, Any]], now: datetime) -> bytes:
    return orjson.dumps(
        {
            "id": f"urn:ngsi-ld:Notification:demo-{int(now.timestamp() * 1000)}",
            "type": "Notification",
            "subscriptionId": "urn:ngsi-ld:Subscription:atalaia:demo",
            "notifiedAt": format_time(now),
            "data": entities,
            "@context": CONTEXT,
        }
    )


class DemoScenario:
    """Pure generator of the demo's notifications, step by step (one step = one second)."""

    def __init__(self, seed: int = 7) -> None:
        from river import datasets

        self.flow = [y for _, y in datasets.WaterFlow()]
        self.rng = random.Random(seed)
        self.step_no = 0

    def step(self, now: datetime) -> list[bytes]:
        k, rng = self.step_no, self.rng
        self.step_no += 1
        observed = format_time(now)
        tide = math.sin(2 * math.pi * k / 120)  # a "tide" every two minutes of demo time
        flood = max(0.0, math.sin(2 * math.pi * k / 600)) ** 4 * 2.8  # a flood wave every ten minutes
        water = [
            _entity(
                "WaterObserved",
                sid,
                name,
                parish,
                lon,
                lat,
                observed,
                {"height": (base + 0.6 * tide + flood * (1.0 - 0.25 * i) + rng.gauss(0, 0.03), "MTR")},
            )
            for i, (sid, name, parish, lon, lat, base) in enumerate(GAUGES)
        ]
        water.append(
            _entity(
                "WaterObserved",
                "porto-adutora-nova-sintra",
                "Adutora Nova Sintra",
                "Campanhã",
                -8.5820,
                41.1525,
                observed,
                {"flow": (self.flow[k % len(self.flow)], "G51")},
            )
        )
        rush = 1 + 0.8 * math.exp(-((((k % 300) - 90) / 30) ** 2))
        air = []
        for i, (sid, parish, lon, lat) in enumerate(AIR):
            if i == 2 and (k // 300) % 3 == 2:  # one station falls silent one period in three
                continue
            no2 = 45 * rush + rng.gauss(0, 6) + (160 if flood > 2.0 and i == 0 else 0)
            pm10 = 28 * rush + rng.gauss(0, 4)
            air.append(
                _entity(
                    "AirQualityObserved",
                    sid,
                    f"QualAr {parish}",
                    parish,
                    lon,
                    lat,
                    observed,
                    {
                        "no2": (max(no2, 0), "GQ"),  # Smart Data Models names (what the rules select)
                        "pm10": (max(pm10, 0), "GQ"),
                        "pm25": (max(pm10 * 0.6, 0), "GQ"),
                    },
                )
            )
        rain = max(0.0, 2 + 12 * flood / 2.8 + rng.gauss(0, 0.5))
        weather = [
            _entity(
                "WeatherObserved",
                "porto-serralves",
                "Serralves",
                "União de Freguesias de Lordelo do Ouro e Massarelos",
                -8.6597,
                41.1596,
                observed,
                {"precipitation": (rain, "MMT")},
            ),
            _entity(  # shares Campanhã with the Freixo river gauge: the compound flood rule joins them
                "WeatherObserved",
                "porto-campanha",
                "Campanhã",
                "Campanhã",
                -8.5850,
                41.1480,
                observed,
                {"precipitation": (max(0.0, rain + rng.gauss(0, 0.3)), "MMT")},
            ),
        ]
        return [notification(water, now), notification(air + weather, now)]


def recorded(steps: int, start: datetime, seed: int = 7) -> list[tuple[datetime, bytes]]:
    """The scenario's first ``steps`` seconds as (event time, notification body), on a fixed clock
    starting at ``start``: the demo feed's output without the wall clock, for tests and replays
    (the flood wave repeats every 600 steps; the ten-minute rain window is full from step 600)."""
    from datetime import timedelta

    scenario = DemoScenario(seed)
    out = []
    for k in range(steps):
        now = start + timedelta(seconds=k)
        out += [(now, body) for body in scenario.step(now)]
    return out


class DemoFeed(Service):
    """POSTs the scenario's notifications to the ingest endpoint once a second."""

    def __init__(self, base_url: str, interval: float = 1.0, token: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = base_url.rstrip("/") + "/ngsi-ld/notify"
        self.headers = {"Content-Type": "application/ld+json"}
        if token:  # the ingest token `atalaia up` made (an Orion-LD subscription would send it too)
            self.headers["Authorization"] = f"Bearer {token}"
        self.interval = interval
        self.sent = 0

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        import httpx

        scenario = await asyncio.to_thread(DemoScenario)
        async with httpx.AsyncClient(timeout=10) as client:
            livez = self.url.rsplit("/ngsi-ld/", 1)[0] + "/livez"
            while not self.should_stop:  # the port opens once the process's services are up
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(livez)).status_code == 200:
                        break
                await asyncio.sleep(0.2)
            while not self.should_stop:
                t0 = time.monotonic()
                for body in scenario.step(datetime.now(UTC)):
                    try:
                        r = await client.post(self.url, content=body, headers=self.headers)
                        if r.status_code >= 300:
                            log.warning("demo: endpoint answered %s: %s", r.status_code, r.text[:200])
                        self.sent += 1
                    except httpx.HTTPError as e:  # endpoint not up yet
                        log.debug("demo: %s", e)
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - t0)))


def start_demo_receivers() -> dict[str, str]:
    """Local stand-ins for the people and systems the demo escalates to: an SMTP server
    (aiosmtpd), and one HTTP server playing the urban platform (NGSI-LD upserts), the
    operations-room webhook, an Alertmanager receiver and an SMSEagle SMS gateway. They run in a
    daemon thread for the life of the process; returns the ``ATALAIA_*`` variables that
    ``config/escalation.yaml`` reads."""
    import threading

    from atalaia.notifiers.testing import HttpSink, SmtpSink

    ready = threading.Event()
    found: dict[str, str] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        http = loop.run_until_complete(HttpSink(secret="demo-webhook-secret-not-for-production").start())
        smtp = SmtpSink().start()
        found.update(
            {
                "ATALAIA_PGU_URL": f"{http.url}/pgu",
                "ATALAIA_WEBHOOK_URL": f"{http.url}/webhook",
                "ATALAIA_WEBHOOK_SECRET": "demo-webhook-secret-not-for-production",
                "ATALAIA_ALERTMANAGER_WEBHOOK_URL": f"{http.url}/alertmanager",
                "ATALAIA_SMS_GATEWAY_URL": f"smseagle://demo-token@127.0.0.1:{http.port}",
                "ATALAIA_SMTP_HOST": "127.0.0.1",
                "ATALAIA_SMTP_PORT": str(smtp.port),
            }
        )
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, name="demo-receivers", daemon=True).start()
    if not ready.wait(15):
        raise RuntimeError("the demo's local SMTP/HTTP receivers did not start")
    return found
