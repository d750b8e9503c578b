-- Runtime silences (kind "silence" events on atalaia.incidents): the latest state of each.
CREATE TABLE silences (
    id          TEXT PRIMARY KEY,
    matchers    {json} NOT NULL,
    author      TEXT NOT NULL,
    comment     TEXT NOT NULL,
    starts_at   {time} NOT NULL,
    ends_at     {time} NOT NULL,
    created_at  {time} NOT NULL,
    source      TEXT NOT NULL,
    expired_by  TEXT,
    last_change TEXT NOT NULL,
    updated_at  {time} NOT NULL
);
CREATE INDEX silences_by_end ON silences (ends_at);
