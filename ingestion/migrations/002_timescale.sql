-- requires: timescaledb
-- Applied only where the timescaledb extension is available (and preloaded); skipped, and
-- tried again at the next start, elsewhere. Written from TimescaleDB 2.x documentation; the
-- forms used here work from 2.10 through 2.2x.
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- A plain historian already on 009 (partitioned by day, rollup tables): back to one table, the hypertable's
-- starting point (its data copied once), and 009's machinery removed (007 builds the layers again).
-- Migrations 001..008 of a fresh TimescaleDB historian reach this with the table of 001: nothing here then.
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'nexus.points'::regclass) = 'p' THEN
        DROP VIEW IF EXISTS nexus.points_1h;
        DROP VIEW IF EXISTS nexus.points_1m;
        DROP VIEW nexus.metrics;
        DROP VIEW nexus.point_partitions;
        CREATE TABLE nexus.points_flat (LIKE nexus.points INCLUDING DEFAULTS);
        INSERT INTO nexus.points_flat SELECT * FROM nexus.points;
        DROP TABLE nexus.points;  -- its partitions, indexes and triggers with it
        ALTER TABLE nexus.points_flat RENAME TO points;
        CREATE INDEX points_tag_time_idx ON nexus.points (tag_id, time DESC);
        CREATE VIEW nexus.metrics AS
        SELECT p.time, t.path, t.enterprise, t.site, t.area, t.line, t.device, t.tag,
               p.value, p.value_text,
               CASE (p.status >> 30) WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END AS quality,
               p.status, t.unit, r.text AS reason
        FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id
        LEFT JOIN nexus.reasons r ON r.id = p.reason_id;
        DROP TABLE nexus.rollup_1m, nexus.rollup_1h, nexus.rollup_state, nexus.rollup_invalid;
        DROP FUNCTION nexus.points_changed();
        DROP FUNCTION nexus.add_partitions(timestamptz, timestamptz);
        DROP FUNCTION nexus.day_start(timestamptz);
    END IF;
END
$$;

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
