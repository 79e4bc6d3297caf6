"""Prometheus metrics of the ingestion worker."""

from prometheus_client import Counter, Gauge, Histogram

# result: stored|duplicate|dead_letter
MESSAGES = Counter("nexus_ingest_messages_total", "Batch, windows and events messages handled", ["result"])
POINTS_IN = Counter("nexus_ingest_points_received_total", "Points decoded from received messages")
POINTS_STORED = Counter("nexus_ingest_points_stored_total", "Points committed to the historian")
DEAD_LETTERS = Counter("nexus_ingest_dead_letters_total", "Messages written to nexus.dead_letters")
BATCH_POINTS = Histogram("nexus_ingest_batch_points", "Points per committed batch",
                         buckets=(10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000))
COPY_SECONDS = Histogram("nexus_ingest_copy_seconds", "Time spent in COPY per batch",
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
COMMIT_SECONDS = Histogram("nexus_ingest_commit_seconds", "Whole batch transaction time (dedup, COPY, commit)",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
PENDING_POINTS = Gauge("nexus_ingest_pending_points", "Points received and not yet committed (queue depth)")
READ_PAUSES = Counter("nexus_ingest_read_pauses_total", "Times reading from the broker paused for backpressure")
DB_ERRORS = Counter("nexus_ingest_db_errors_total", "Database errors (batch retried after reconnect)")
PENDING_BYTES = Gauge("nexus_ingest_pending_bytes",
                      "Payload bytes received and not yet committed (stored messages and dead letters)")
DUPLICATE_POINTS = Counter("nexus_ingest_duplicate_points_total",
                           "Points dropped because a later point of the same message had the same (tag, ts)")
OVERSIZE = Counter("nexus_ingest_oversize_messages_total",
                   "Messages larger than max_message_bytes, dead-lettered without decoding")
UNEXPECTED_ERRORS = Counter("nexus_ingest_unexpected_errors_total",
                            "Messages dead-lettered because handling them raised something other than a "
                            "contract error (a bug worth reporting; the worker carries on)")
ACKS_SENT = Counter("nexus_ingest_acks_sent_total", "Delivery ack messages published to gateways after a commit")
ACKS_UNSENT = Counter("nexus_ingest_acks_unsent_total",
                      "Delivery acks not published (broker disconnected or window full); the gateway re-sends")
ACKS_UNHEARD = Counter("nexus_ingest_acks_unheard_total",
                       "Delivery acks the broker took but no subscriber matched (gateway offline; it re-sends)")
WINDOWS_STORED = Counter("nexus_ingest_windows_stored_total",
                         "Edge windows written to nexus.windows (inserted, or replacing the stored window)")
ALARM_EVENTS_STORED = Counter("nexus_ingest_alarm_events_stored_total", "Alarm events stored in nexus.alarm_events")
ALARM_EVENTS_REPEATED = Counter("nexus_ingest_alarm_events_repeated_total",
                                "Alarm events skipped: already stored (same tag, alarm, ts and raise/clear)")

# the plain-PostgreSQL historian's upkeep (ingestion/upkeep.py): set by the leader only (partitions for a
# backfill by any worker)
UPKEEP_LEADER = Gauge("nexus_ingest_upkeep_leader", "1 while this worker is the historian upkeep leader")
UPKEEP_ROUNDS = Counter("nexus_ingest_upkeep_rounds_total", "Upkeep rounds done as the leader")
UPKEEP_ERRORS = Counter("nexus_ingest_upkeep_errors_total", "Upkeep rounds that failed (retried on a new connection)")
UPKEEP_SECONDS = Histogram("nexus_ingest_upkeep_seconds", "Time of one upkeep round",
                           buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
PARTITIONS_CREATED = Counter("nexus_ingest_partitions_created_total",
                             "Day partitions of nexus.points made (ahead by the leader, for backfills by any worker)")
PARTITIONS_DROPPED = Counter("nexus_ingest_partitions_dropped_total", "Day partitions dropped by retention")
ROLLUP_BUCKETS = Counter("nexus_ingest_rollup_buckets_total", "Rollup rows written (minutes and hours)")
ROLLUP_LAG = Gauge("nexus_ingest_rollup_lag_seconds",
                   "Seconds from the 1-minute rollup's watermark to now (newer buckets are computed at query time)")

# the Sparkplug B primary host (ingestion/sparkplug/): set by the worker hosting it
SPARKPLUG_HOST = Gauge("nexus_ingest_sparkplug_host", "1 while this worker is the Sparkplug primary host")
# type: NBIRTH, NDATA, ..., STATE (host STATE messages), invalid (topic not Sparkplug)
SPARKPLUG_MESSAGES = Counter("nexus_ingest_sparkplug_messages_total", "Sparkplug messages received by the host",
                             ["type"])
SPARKPLUG_REBIRTHS = Counter("nexus_ingest_sparkplug_rebirths_total",
                             "Rebirths asked of edge nodes (NCMD Node Control/Rebirth published)")
SPARKPLUG_REBIRTHS_UNSENT = Counter("nexus_ingest_sparkplug_rebirths_unsent_total",
                                    "Rebirth requests not published (host disconnected or its window full)")
SPARKPLUG_DEAD_LETTERS = Counter("nexus_ingest_sparkplug_dead_letters_total",
                                 "Sparkplug messages made dead letters (undecodable, or DATA the host refused)")
SPARKPLUG_TAKEOVERS = Counter("nexus_ingest_sparkplug_host_sessions_total",
                              "Times this worker became the Sparkplug primary host")
