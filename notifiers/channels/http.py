"""HTTP channels: the PGU NGSI-LD ``Alert`` upsert, the signed webhook, the Alertmanager
webhook (version 4 payload)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from atalaia.notifiers.channels.base import Channel, ChannelContext, post
from atalaia.notifiers.model import DeliveryResult, IncidentSnapshot, Notification
from atalaia.notifiers.render import render
from atalaia.notifiers.signing import DELIVERY_HEADER, sign_headers

NGSI_LD_CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
SDM_ALERT_CONTEXT = (
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Alert/master/context.jsonld"
)
SDM_CATEGORIES = ("traffic", "naturalDisaster", "weather", "environment", "health", "security", "agriculture")


def alert_entity_id(incident: str) -> str:
    return f"urn:ngsi-ld:Alert:{incident}"


def _dt(value: str) -> dict[str, Any]:
    return {"type": "Property", "value": {"@type": "DateTime", "@value": value}}


def alert_entity(s: IncidentSnapshot, source: str) -> dict[str, Any]:
    """The incident as a normalized NGSI-LD Smart Data Models ``Alert`` entity."""
    category = s.labels.get("category", "environment")
    ent: dict[str, Any] = {
        "id": alert_entity_id(s.incident),
        "type": "Alert",
        "category": {"type": "Property", "value": category if category in SDM_CATEGORIES else "environment"},
        "severity": {"type": "Property", "value": s.severity},
        "description": {"type": "Property", "value": s.title},
        "alertSource": {"type": "Property", "value": source},
        "dateIssued": _dt(s.opened_at or s.at),
        "validFrom": _dt(s.opened_at or s.at),
        "data": {
            "type": "Property",
            "value": {
                "incident": s.incident,
                "version": s.version,
                "state": s.state,
                "active": s.active,
                "change": s.change,
                "acknowledgedBy": s.acknowledged_by,
                "alarms": len(s.alarms),
                "labels": s.labels,
            },
        },
        "@context": [NGSI_LD_CORE, SDM_ALERT_CONTEXT],
    }
    if "subCategory" in s.labels:
        ent["subCategory"] = {"type": "Property", "value": s.labels["subCategory"]}
    if s.state == "closed":
        ent["validTo"] = _dt(s.at)
    if s.location:
        ent["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": list(s.location)}}
    return ent


class NgsiLdAlertChannel(Channel):
    """Upserts ``urn:ngsi-ld:Alert:<incident>`` at ``POST {url}/ngsi-ld/v1/entityOperations/upsert``
    (replace semantics). Idempotent: the same notification upserts the same entity."""

    kind = "ngsi-ld"
    idempotent = True

    def __init__(
        self,
        name: str,
        ctx: ChannelContext,
        url: str,
        tenant: str | None = None,
        timeout: float = 10.0,
        tenant_from_incident: bool = True,
    ):
        super().__init__(name, ctx)
        self.url = url.rstrip("/") + "/ngsi-ld/v1/entityOperations/upsert"
        self.tenant, self.timeout = tenant, timeout
        self.tenant_from_incident = tenant_from_incident

    def tenant_for(self, n: Notification) -> str | None:
        """The NGSILD-Tenant of this upsert: the target's fixed tenant, else the incident's (or the
        warning's) own tenant, so each municipality's Alert lands in its own tenant of the PGU."""
        if self.tenant:
            return self.tenant
        if not self.tenant_from_incident or n.snapshot is None:
            return None
        return n.snapshot.tenant or n.snapshot.correlation.get("tenant") or None

    async def send(self, n: Notification) -> DeliveryResult:
        headers = {"Content-Type": "application/ld+json"}
        tenant = self.tenant_for(n)
        if tenant:
            headers["NGSILD-Tenant"] = tenant
        if n.kind == "warning":
            return await self._warning(n, headers)
        source = (self.ctx.console_url or "urn:atalaia").rstrip("/")
        body = orjson.dumps([alert_entity(n.snapshot, source)])
        return await self._upsert(self.url, body, headers)

    async def _warning(self, n: Notification, headers: dict[str, str]) -> DeliveryResult:
        """The warning's own ``Alert`` (replace), then the Alerts it supersedes end (``validTo``,
        a partial update). Both are idempotent: a re-send changes nothing."""
        from atalaia.notifiers import warning as wmsg
        from atalaia.warnings.feed import alert_path

        w = n.warning or {}
        link = (
            self.ctx.console_url.rstrip("/") + alert_path(w["identifier"]) if self.ctx.console_url else None
        )
        res = await self._upsert(self.url, orjson.dumps([wmsg.alert_entity(w, link)]), headers)
        old = wmsg.superseded_entities(w)
        if res.ok and old:
            res = await self._upsert(self.url + "?options=update", orjson.dumps(old), headers)
        return res

    async def _upsert(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryResult:
        res = await post(self.ctx, url, content=body, headers=headers, timeout=self.timeout)
        if res.ok and res.detail == "HTTP 207":  # batch operation with per-entity errors
            return DeliveryResult(
                "permanent", error="NGSI-LD upsert reported errors (207)", detail=res.detail
            )
        return res


def warning_webhook_body(n: Notification, ctx: ChannelContext) -> bytes:
    """A warning as JSON: the delivery id, the CAP header fields, the short text and subject in the
    target's language, and the CAP XML itself."""
    from atalaia.notifiers import warning as wmsg

    w = n.warning or {}
    subject, _ = wmsg.email(w, ctx.tz, ctx.lang)
    return orjson.dumps(
        {
            "id": n.id,
            "kind": "warning",
            "target": n.target,
            "warning": w.get("warning"),
            "version": w.get("version"),
            "identifier": w["identifier"],
            "sender": w["sender"],
            "sent": w["sent"],
            "status": w["status"],
            "msgType": w["msgType"],
            "references": w["references"],
            "message": {"lang": ctx.lang, "subject": subject, "text": wmsg.sms_text(w, ctx.tz, ctx.lang)},
            "cap": w.get("xml"),
        }
    )


def webhook_body(n: Notification, ctx: ChannelContext) -> bytes:
    if n.kind == "warning":
        return warning_webhook_body(n, ctx)
    msg = render(n, ctx.lang, ctx.tz, ctx.console_url, ctx.rules)
    return orjson.dumps(
        {
            "id": n.id,
            "kind": n.kind,
            "incident": n.incident,
            "policy": n.policy,
            "episode": n.episode,
            "step": n.step,
            "repeat": n.repeat,
            "target": n.target,
            "due": n.due,
            "snapshot": n.snapshot,
            "message": {"lang": ctx.lang, "subject": msg.subject, "text": msg.short},
        }
    )


class SignedWebhookChannel(Channel):
    """JSON POST signed with HMAC-SHA256 (see :mod:`atalaia.notifiers.signing`). Receivers dedupe
    on ``X-Atalaia-Delivery``, so it is treated as idempotent."""

    kind = "webhook"
    idempotent = True

    def __init__(
        self,
        name: str,
        ctx: ChannelContext,
        url: str,
        secret: str,
        timeout: float = 10.0,
        warning_format: str = "json",
    ):
        super().__init__(name, ctx)
        self.url, self.secret, self.timeout = url, secret, timeout
        self.warning_format = warning_format

    async def send(self, n: Notification) -> DeliveryResult:
        ctype = "application/json"
        if n.kind == "warning" and self.warning_format == "cap":  # the CAP document itself
            body, ctype = str((n.warning or {}).get("xml", "")).encode(), "application/cap+xml"
        else:
            body = webhook_body(n, self.ctx)
        headers = {
            "Content-Type": ctype,
            DELIVERY_HEADER: n.id,
            **sign_headers(self.secret, body, int(self.ctx.clock())),
        }
        return await post(self.ctx, self.url, content=body, headers=headers, timeout=self.timeout)


ZERO_TIME = "0001-01-01T00:00:00Z"


def alertmanager_payload(n: Notification, receiver: str, external_url: str) -> dict[str, Any]:
    """An Alertmanager webhook (version 4) payload: one group per incident, one alert per alarm."""
    s = n.snapshot
    resolved = n.kind == "resolved" or s.state == "closed"
    status = "resolved" if resolved else "firing"
    link = f"{external_url.rstrip('/')}/incidents/{s.incident}" if external_url else ""
    common = {**s.labels, "incident": s.incident, "severity": s.severity}
    alarms = s.alarms or [
        {
            "rule": "incident",
            "key": s.incident,
            "entity": None,
            "severity": s.severity,
            "first_seen": s.opened_at or s.at,
            "last_seen": s.at,
            "state": s.state,
        }
    ]
    alerts = []
    for a in alarms:
        labels = {
            **common,
            "alertname": str(a.get("rule", "incident")),
            "severity": str(a.get("severity") or s.severity),
        }
        if a.get("entity") or a.get("key"):
            labels["entity"] = str(a.get("entity") or a.get("key"))
        a_resolved = resolved or a.get("state") in ("resolved", "inactive")
        fp = hashlib.blake2b(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()
        alerts.append(
            {
                "status": "resolved" if a_resolved else "firing",
                "labels": labels,
                "annotations": {
                    "summary": s.title,
                    **({"value": str(a["value"])} if a.get("value") is not None else {}),
                },
                "startsAt": a.get("first_seen") or s.opened_at or s.at,
                "endsAt": (a.get("last_seen") or s.at) if a_resolved else ZERO_TIME,
                "generatorURL": link,
                "fingerprint": fp,
            }
        )
    return {
        "version": "4",
        "groupKey": f'{{}}:{{incident="{s.incident}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"incident": s.incident},
        "commonLabels": common,
        "commonAnnotations": {"summary": s.title},
        "externalURL": external_url,
        "alerts": alerts,
    }


class AlertmanagerWebhookChannel(Channel):
    """For tools that already speak Alertmanager's webhook receiver format."""

    kind = "alertmanager"
    idempotent = False

    def __init__(self, name: str, ctx: ChannelContext, url: str, timeout: float = 10.0):
        super().__init__(name, ctx)
        self.url, self.timeout = url, timeout

    async def send(self, n: Notification) -> DeliveryResult:
        if n.kind == "warning":
            return DeliveryResult(
                "permanent", error="an alertmanager target cannot carry a population warning"
            )
        body = orjson.dumps(alertmanager_payload(n, self.name, self.ctx.console_url or ""))
        return await post(
            self.ctx,
            self.url,
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=self.timeout,
        )
