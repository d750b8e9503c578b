-- Incident projection: current incidents, their alarms, and the audit trail (one row per event).
-- Tokens: {json} = JSONB on PostgreSQL, TEXT on SQLite; {time} = TIMESTAMPTZ / TEXT (RFC 3339).
CREATE TABLE incidents (
    id              TEXT PRIMARY KEY,
    version         INTEGER NOT NULL,
    state           TEXT NOT NULL,
    active          BOOLEAN NOT NULL,
    severity        TEXT NOT NULL,
    title           TEXT NOT NULL,
    correlation     {json} NOT NULL,
    labels          {json} NOT NULL,
    location        {json},
    alarm_count     INTEGER NOT NULL,
    opened_at       {time} NOT NULL,
    updated_at      {time} NOT NULL,
    closed_at       {time},
    acknowledged_by TEXT,
    shelved_until   {time},
    assignee        TEXT,
    last_change     TEXT NOT NULL,
    last_event      TEXT NOT NULL
);
CREATE INDEX incidents_by_state ON incidents (state, updated_at);
CREATE TABLE incident_alarms (
    incident   TEXT NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    rule       TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    entity     TEXT,
    state      TEXT NOT NULL,
    severity   TEXT NOT NULL,
    value      DOUBLE PRECISION,
    count      INTEGER NOT NULL,
    first_seen {time} NOT NULL,
    last_seen  {time} NOT NULL,
    suppressed TEXT,
    chattering BOOLEAN NOT NULL,
    PRIMARY KEY (incident, rule, key)
);
CREATE TABLE incident_audit (
    event_id TEXT PRIMARY KEY,
    incident TEXT NOT NULL,
    version  INTEGER NOT NULL,
    at       {time} NOT NULL,
    change   TEXT NOT NULL,
    changes  {json} NOT NULL,
    state    TEXT NOT NULL,
    active   BOOLEAN NOT NULL,
    severity TEXT NOT NULL,
    actor    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    command  TEXT,
    UNIQUE (incident, version)
);
CREATE INDEX incident_audit_by_time ON incident_audit (at);
