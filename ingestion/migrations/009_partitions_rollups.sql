-- requires: plain
-- Plain PostgreSQL that does not slow down as history grows (TimescaleDB has its own: 002 and 007; there this
-- migration is not needed and recorded as done without running, see ingestion/schema.py):
-- * nexus.points partitioned by day (UTC), partitions created ahead by the upkeep leader and on demand by a
--   worker whose COPY meets a day without one (a backfill, a clock off), all through nexus.add_partitions
--   under an advisory lock, and dropped for retention by the leader (ingestion/partitions.py, upkeep.py).
--   No DEFAULT partition: with one, PostgreSQL cannot read the day partitions newest first, and the newest
--   point of a tag (ORDER BY time DESC LIMIT 1) would cost one probe per day kept;
-- * the 1-minute and 1-hour layers as rollup tables maintained by the same leader (ingestion/rollups.py),
--   behind views with the names and columns of TimescaleDB's continuous aggregates (nexus.points_1m,
--   nexus.points_1h) which, like them, are real time: buckets not rolled up yet are computed from the layer
--   below at query time;
-- * late data: a statement-level trigger records the time range of every change to nexus.points below the
--   rollup horizon in nexus.rollup_invalid (whoever inserts: ingestion, a backfill by hand); the leader
--   re-aggregates those buckets at its next run.
-- An existing historian keeps its data: the old table becomes the partition nexus.points_legacy, covering
-- the days it holds (attached, not copied), dropped whole by retention once all of it is old enough.

-- days start at UTC midnight, whatever the session's TimeZone
CREATE FUNCTION nexus.day_start(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT date_trunc('day', t, 'UTC') $$;

ALTER TABLE nexus.points RENAME TO points_legacy;
ALTER INDEX nexus.points_tag_time_idx RENAME TO points_legacy_tag_time_idx;

CREATE TABLE nexus.points (
    time        timestamptz NOT NULL,       -- source timestamp
    tag_id      integer NOT NULL,           -- nexus.tags.id
    value       double precision,           -- numbers and bools (0/1); NULL for strings / no value
    value_text  text,                       -- strings; also the exact text of integers beyond 2^53
    status      bigint NOT NULL DEFAULT 0,  -- OPC UA StatusCode; top two bits: 0 good, 1 uncertain, 2 bad
    reason_id   integer                     -- nexus.reasons.id
) PARTITION BY RANGE (time);
CREATE INDEX points_tag_time_idx ON nexus.points (tag_id, time DESC);
-- all tags over a recent range (the layers' newest buckets, pipeline health): a BRIN index is tiny and
-- costs next to nothing per insert on time-ordered data
CREATE INDEX points_time_brin ON nexus.points USING brin (time);

DO $$
DECLARE
    lo timestamptz;
    hi timestamptz;
BEGIN
    SELECT min(time), max(time) INTO lo, hi FROM nexus.points_legacy;
    IF lo IS NULL THEN
        DROP TABLE nexus.points_legacy CASCADE;  -- with the old views over it
    ELSE
        EXECUTE format('ALTER TABLE nexus.points ATTACH PARTITION nexus.points_legacy FOR VALUES FROM (%L) TO (%L)',
                       nexus.day_start(lo), nexus.day_start(hi) + interval '1 day');
    END IF;
END
$$;

-- the partitions and their bounds, from the catalog
CREATE VIEW nexus.point_partitions AS
SELECT c.relname::text AS name, b[1]::timestamptz AS lo, b[2]::timestamptz AS hi
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']*)''\) TO \(''([^'']*)''\)') b
WHERE i.inhparent = 'nexus.points'::regclass AND b IS NOT NULL;

-- The day partitions covering [lo, hi) that are missing, created (alone, then attached: ATTACH locks
-- nexus.points only against other DDL, where CREATE TABLE ... PARTITION OF would lock out every writer);
-- how many. One caller at a time (advisory lock "nxup"); whoever needs a day calls it: the upkeep leader
-- for the days ahead, a worker for a backfill, an operator before loading by hand.
CREATE FUNCTION nexus.add_partitions(lo timestamptz, hi timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d timestamptz := nexus.day_start(lo);
    made integer := 0;
    name text;
BEGIN
    PERFORM pg_advisory_xact_lock(1853388144);
    WHILE d < hi LOOP
        IF NOT EXISTS (SELECT 1 FROM nexus.point_partitions p WHERE p.lo <= d AND d < p.hi) THEN
            name := 'points_' || to_char(d AT TIME ZONE 'UTC', 'YYYYMMDD');
            EXECUTE format('CREATE TABLE nexus.%I (LIKE nexus.points INCLUDING DEFAULTS)', name);
            EXECUTE format('ALTER TABLE nexus.points ATTACH PARTITION nexus.%I FOR VALUES FROM (%L) TO (%L)',
                           name, d, d + interval '1 day');
            made := made + 1;
        END IF;
        d := d + interval '1 day';
    END LOOP;
    RETURN made;
END
$$;
SELECT nexus.add_partitions(nexus.day_start(now()), nexus.day_start(now()) + interval '4 days');  -- today, 3 ahead

-- views over the old table followed it (a view refers to a table, not to its name): over the new one now
CREATE OR REPLACE VIEW nexus.metrics AS
SELECT p.time, t.path, t.enterprise, t.site, t.area, t.line, t.device, t.tag,
       p.value, p.value_text,
       CASE (p.status >> 30) WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END AS quality,
       p.status, t.unit, r.text AS reason
FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id
LEFT JOIN nexus.reasons r ON r.id = p.reason_id;
DROP VIEW IF EXISTS nexus.points_1h;
DROP VIEW IF EXISTS nexus.points_1m;

-- The rollups: the columns of 006's views, one row per (tag, bucket) below the layer's watermark.
CREATE TABLE nexus.rollup_1m (
    bucket       timestamptz NOT NULL,
    tag_id       integer NOT NULL,
    min          double precision,
    max          double precision,
    avg          double precision,
    last         double precision,
    samples      bigint NOT NULL,
    value_sum    double precision,
    value_count  bigint NOT NULL,
    PRIMARY KEY (tag_id, bucket)
);
-- all tags over a range of buckets (the hour's live part): BRIN, rows come in bucket order; a btree here
-- would be preferred by the planner over the primary key for one tag's range, and read every tag
CREATE INDEX rollup_1m_bucket_brin ON nexus.rollup_1m USING brin (bucket);
CREATE TABLE nexus.rollup_1h (LIKE nexus.rollup_1m INCLUDING ALL);

-- Per layer (1 = minute from the raw points, 2 = hour from the minutes): everything before watermark is in
-- the rollup table; horizon (>= watermark) is where the leader is rolling up to, announced before it reads:
-- a change below it is recorded as late (see nexus.points_changed)
CREATE TABLE nexus.rollup_state (
    layer      integer PRIMARY KEY,
    width      interval NOT NULL,
    watermark  timestamptz NOT NULL DEFAULT '-infinity',
    horizon    timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO nexus.rollup_state (layer, width) VALUES (1, '1 minute'), (2, '1 hour');

-- Ranges [lo, hi] (inclusive) of a layer whose buckets changed below its horizon: re-aggregated, then deleted.
CREATE TABLE nexus.rollup_invalid (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    layer  integer NOT NULL,
    lo     timestamptz NOT NULL,
    hi     timestamptz NOT NULL
);

-- Statement level, so once per COPY; the shared advisory lock (key 0x6e787275, "nxru") orders it against the
-- leader moving the horizon (exclusive, for a moment): a change either is seen by the leader's read or
-- sees the new horizon and is recorded. (Retention drops whole partitions: no trigger, the rollups keep them.)
CREATE FUNCTION nexus.points_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    h timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1853387381);
    SELECT horizon INTO h FROM nexus.rollup_state WHERE layer = 1;
    SELECT min(time), max(time) INTO lo, hi FROM changed_rows;
    IF lo < h THEN
        INSERT INTO nexus.rollup_invalid (layer, lo, hi) VALUES (1, lo, least(hi, h));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER points_inserted AFTER INSERT ON nexus.points
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION nexus.points_changed();
CREATE TRIGGER points_deleted AFTER DELETE ON nexus.points
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION nexus.points_changed();
CREATE TRIGGER points_updated AFTER UPDATE ON nexus.points  -- by the new times (ingestion never updates)
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION nexus.points_changed();

-- The views nexus.points_1m and nexus.points_1h (real time, like TimescaleDB's materialized_only = false:
-- the rollup below the watermark, the layer below aggregated at query time from it on) are defined by
-- ingestion/rollups.py right after the migrations and again whenever a watermark moves, with the watermark
-- written in as a constant: the planner then prunes the partitions and estimates the live part as what it
-- is (a minute or two), where a watermark read at run time left it guessing a third of the table.
