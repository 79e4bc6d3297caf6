-- Edge aggregates and alarms (proto/aggregates.py); plain PostgreSQL 15+ and TimescaleDB alike (migration
-- 005 makes nexus.windows a hypertable where TimescaleDB is available, as 002 does for nexus.points).
-- tag_id is nexus.tags.id, resolved by ingestion from <device path>/<tag> exactly as for points (no FK,
-- for the same reason as nexus.points).

-- One row per (tag, width, start): a tumbling window closed by the gateway. A window sent again (a
-- re-send, a gateway's recomputation) replaces the stored one, except that an incomplete window
-- (complete = false: the gateway did not see it from its start) never replaces a complete one.
CREATE TABLE nexus.windows (
    tag_id     integer NOT NULL,            -- nexus.tags.id
    width_ms   integer NOT NULL CHECK (width_ms > 0),  -- window width, milliseconds
    start      timestamptz NOT NULL,        -- window start, a multiple of width_ms since the Unix epoch
    count      integer NOT NULL,            -- readings in [start, start + width)
    min        double precision,            -- NULL: no numeric reading in the window
    max        double precision,
    avg        double precision,
    twa        double precision,            -- time-weighted average
    first      double precision,
    last       double precision,
    status     bigint NOT NULL DEFAULT 0,   -- worst OPC UA StatusCode among the readings
    complete   boolean NOT NULL DEFAULT true,
    PRIMARY KEY (tag_id, width_ms, start)
);

-- Every alarm event exactly as the gateway reported it, once: a re-sent event hits the primary key
-- and is skipped. Order of arrival does not matter (re-sends, several workers): nexus.alarms is
-- derived from this table at read time.
CREATE TABLE nexus.alarm_events (
    tag_id       integer NOT NULL,          -- nexus.tags.id
    alarm        text NOT NULL,             -- high | low | rate | stuck
    ts           timestamptz NOT NULL,      -- source timestamp of the raise or clear
    active       boolean NOT NULL,          -- true: raised, false: cleared
    value        double precision,          -- the value at the event
    limit_value  double precision,          -- the limit crossed (stuck: seconds without change)
    severity     integer NOT NULL,          -- 1..1000
    PRIMARY KEY (tag_id, alarm, ts, active)
);
-- the first clear at or after a raise, the last clear before a time: one index probe each
CREATE INDEX alarm_events_clears_idx ON nexus.alarm_events (tag_id, alarm, ts) WHERE NOT active;

-- One row per raise. A raise is closed by the first clear of the same tag and alarm at or after it
-- (so a raise repeated without a clear in between, e.g. after a gateway restart, closes with it).
-- A clear that closes nothing (no raise since the previous clear: the raise is not in the historian)
-- is a row of its own with raised_at NULL. active = raised and not cleared.
CREATE VIEW nexus.alarms AS
SELECT r.tag_id, r.alarm, r.ts AS raised_at, c.ts AS cleared_at, c.ts IS NULL AS active,
       r.value AS raised_value, r.limit_value AS raised_limit, r.severity, c.value AS cleared_value
FROM nexus.alarm_events r
LEFT JOIN LATERAL (
    SELECT e.ts, e.value FROM nexus.alarm_events e
    WHERE e.tag_id = r.tag_id AND e.alarm = r.alarm AND NOT e.active AND e.ts >= r.ts
    ORDER BY e.ts LIMIT 1) c ON true
WHERE r.active
UNION ALL
SELECT c.tag_id, c.alarm, NULL, c.ts, false, NULL, NULL, NULL, c.value
FROM nexus.alarm_events c
WHERE NOT c.active AND NOT EXISTS (
    SELECT 1 FROM nexus.alarm_events r
    WHERE r.tag_id = c.tag_id AND r.alarm = c.alarm AND r.active AND r.ts <= c.ts
      AND r.ts > coalesce((SELECT max(p.ts) FROM nexus.alarm_events p
                           WHERE p.tag_id = c.tag_id AND p.alarm = c.alarm AND NOT p.active AND p.ts < c.ts),
                          '-infinity'));
