-- requires: timescaledb
-- Applied only where the timescaledb extension is available (and preloaded); skipped, and
-- tried again at the next start, elsewhere. Written from TimescaleDB 2.x documentation; the
-- forms used here work from 2.10 through 2.2x.
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('nexus.points', 'time',
                         chunk_time_interval => INTERVAL '1 day',
                         if_not_exists => TRUE, migrate_data => TRUE);

-- Compressed chunks are segmented per tag and ordered by time: the shape of every dashboard query.
ALTER TABLE nexus.points SET (timescaledb.compress,
                              timescaledb.compress_segmentby = 'tag_id',
                              timescaledb.compress_orderby = 'time DESC');

DROP VIEW IF EXISTS nexus.points_1m;
CREATE MATERIALIZED VIEW nexus.points_1m WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, tag_id,
       min(value) AS min, max(value) AS max, avg(value) AS avg,
       last(value, time) AS last, count(*) AS samples
FROM nexus.points GROUP BY 1, 2
WITH NO DATA;

SELECT add_continuous_aggregate_policy('nexus.points_1m',
                                       start_offset => INTERVAL '1 hour',
                                       end_offset => INTERVAL '1 minute',
                                       schedule_interval => INTERVAL '1 minute',
                                       if_not_exists => TRUE);
