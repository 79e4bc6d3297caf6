-- requires: timescaledb
-- nexus.windows as a hypertable, where the extension is available (like 002 for nexus.points; skipped
-- and looked at again at the next start elsewhere). A window row per tag and width per window: weekly
-- chunks stay small. Its primary key holds the time column, as a hypertable's unique keys must.
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('nexus.windows', 'start',
                         chunk_time_interval => INTERVAL '7 days',
                         if_not_exists => TRUE, migrate_data => TRUE);
