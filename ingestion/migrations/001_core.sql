-- Core historian schema; runs on plain PostgreSQL 15+ and on TimescaleDB alike.
CREATE SCHEMA IF NOT EXISTS nexus;

-- One row per UNS tag: enterprise/site/area/line/device/tag. Points refer to it by id, so a
-- point row stays small (no repeated path text) and COPY moves fewer bytes.
CREATE TABLE nexus.tags (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path        text NOT NULL UNIQUE,
    enterprise  text NOT NULL,
    site        text NOT NULL,
    area        text NOT NULL,
    line        text NOT NULL,
    device      text NOT NULL,
    tag         text NOT NULL,
    unit        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The historian. No foreign key to tags: a per-row FK check would cost more than the COPY itself,
-- and ingestion creates the tag row in the same transaction as its first points.
CREATE TABLE nexus.points (
    time        timestamptz NOT NULL,       -- source timestamp
    tag_id      integer NOT NULL,           -- nexus.tags.id
    value       double precision,           -- numbers and bools (0/1); NULL for strings / no value
    value_text  text,                       -- strings; also the exact text of integers beyond 2^53
    status      bigint NOT NULL DEFAULT 0   -- OPC UA StatusCode; top two bits: 0 good, 1 uncertain, 2 bad
);
CREATE INDEX points_tag_time_idx ON nexus.points (tag_id, time DESC);

-- Idempotency: one row per ingested batch message (a 16-byte digest of topic + payload). A
-- redelivered message finds its digest here and its points are not written twice.
CREATE TABLE nexus.ingested_messages (
    digest       bytea PRIMARY KEY,
    topic        text NOT NULL,
    points       integer NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingested_messages_at_idx ON nexus.ingested_messages (ingested_at);

-- Messages that could not be decoded or stored, kept byte for byte with the reason.
CREATE TABLE nexus.dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    error        text NOT NULL,
    worker       text NOT NULL
);

-- What Grafana and people query: points with their UNS identity and quality spelled out.
CREATE VIEW nexus.metrics AS
SELECT p.time, t.path, t.enterprise, t.site, t.area, t.line, t.device, t.tag,
       p.value, p.value_text,
       CASE (p.status >> 30) WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END AS quality,
       p.status, t.unit
FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id;

-- One-minute buckets. On TimescaleDB migration 002 replaces this view with a continuous aggregate
-- of the same shape, so dashboards work on both.
CREATE VIEW nexus.points_1m AS
SELECT date_bin('1 minute', time, TIMESTAMPTZ '2000-01-01') AS bucket, tag_id,
       min(value) AS min, max(value) AS max, avg(value) AS avg,
       (array_agg(value ORDER BY time DESC))[1] AS last, count(*) AS samples
FROM nexus.points GROUP BY 1, 2;
