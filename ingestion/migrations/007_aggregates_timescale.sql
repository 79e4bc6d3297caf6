-- requires: timescaledb
-- Complete aggregates on TimescaleDB (replacing 002's nexus.points_1m, which was materialized only, never
-- refreshed over the history and refreshed over the last hour only):
-- * nexus.points_1m, a continuous aggregate over nexus.points, and nexus.points_1h, a hierarchical one over
--   nexus.points_1m (an hour from its 60 minutes), with the columns of 006's views;
-- * real time (materialized_only = false): the buckets not materialized yet (the newest minute, the current
--   hour) are computed from the layer below at query time;
-- * created WITH NO DATA (a refresh cannot run inside this transaction): the rows put in
--   nexus.aggregate_refresh make ingestion/schema.py refresh each layer over the whole history right after
--   the migration commits, lowest layer first, and delete the row once done (a crash in between refreshes
--   at the next start);
-- * their refresh policies, compression and retention are set by ingestion/schema.py from the settings
--   (created once, altered when a setting changes).
CREATE EXTENSION IF NOT EXISTS timescaledb;

DROP VIEW IF EXISTS nexus.points_1h;  -- 006's plain view, where the extension came later
DROP MATERIALIZED VIEW IF EXISTS nexus.points_1m;  -- 002's aggregate and its policy

CREATE MATERIALIZED VIEW nexus.points_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, tag_id,
       min(value) AS min, max(value) AS max, avg(value) AS avg,
       last(value, time) AS last, count(*) AS samples,
       sum(value) AS value_sum, count(value) AS value_count
FROM nexus.points GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW nexus.points_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, tag_id,
       min(min) AS min, max(max) AS max, sum(value_sum) / nullif(sum(value_count), 0)::double precision AS avg,
       last(last, bucket) AS last, sum(samples)::bigint AS samples,
       sum(value_sum) AS value_sum, sum(value_count)::bigint AS value_count
FROM nexus.points_1m GROUP BY 1, 2
WITH NO DATA;

CREATE TABLE IF NOT EXISTS nexus.aggregate_refresh (
    layer  integer PRIMARY KEY,  -- refresh order: 1 = points_1m, 2 = points_1h
    view   text NOT NULL         -- the continuous aggregate to refresh over its whole history
);
INSERT INTO nexus.aggregate_refresh (layer, view) VALUES (1, 'nexus.points_1m'), (2, 'nexus.points_1h')
ON CONFLICT (layer) DO NOTHING;
