-- The 1-hour layer beside the 1-minute one, with the same columns on both backends, so dashboards and the
-- history API ask the same names everywhere. Both layers gain value_sum and value_count (of the numeric
-- readings: min/max/avg ignore a NULL value, samples counts every row): an hour's avg is then exact
-- when built from its minutes, sum(value_sum) / sum(value_count).
-- On plain PostgreSQL these are views over nexus.points (points_1h over the raw table, not over points_1m,
-- so TimescaleDB's 002 can still replace points_1m when the extension is installed later). Where
-- nexus.points_1m is already a continuous aggregate (TimescaleDB), nothing here: 007 builds both layers.
DO $$
BEGIN
    IF to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL THEN  -- nested: parsed only here
        IF EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                   WHERE view_schema = 'nexus' AND view_name = 'points_1m') THEN
            RETURN;
        END IF;
    END IF;
    CREATE OR REPLACE VIEW nexus.points_1m AS
    SELECT date_bin('1 minute', time, TIMESTAMPTZ '2000-01-01') AS bucket, tag_id,
           min(value) AS min, max(value) AS max, avg(value) AS avg,
           (array_agg(value ORDER BY time DESC))[1] AS last, count(*) AS samples,
           sum(value) AS value_sum, count(value) AS value_count
    FROM nexus.points GROUP BY 1, 2;
    CREATE OR REPLACE VIEW nexus.points_1h AS
    SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01') AS bucket, tag_id,
           min(value) AS min, max(value) AS max, avg(value) AS avg,
           (array_agg(value ORDER BY time DESC))[1] AS last, count(*) AS samples,
           sum(value) AS value_sum, count(value) AS value_count
    FROM nexus.points GROUP BY 1, 2;
END
$$;
