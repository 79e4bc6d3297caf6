"""Prometheus metrics of the gateway."""

from prometheus_client import Counter, Gauge, Histogram

POLLS = Counter("nexus_gateway_polls_total", "Completed polls", ["device"])
SKIPPED_POLLS = Counter("nexus_gateway_skipped_polls_total",
                        "Polls skipped because the publish queue was full (backpressure) or overran", ["device", "why"])
READ_ERRORS = Counter("nexus_gateway_read_errors_total", "Failed device reads and connects", ["device"])
POLL_SECONDS = Histogram("nexus_gateway_poll_seconds", "Duration of one poll of a device", ["device"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
DEVICE_UP = Gauge("nexus_gateway_device_connected", "1 when the device connection is up", ["device"])
POINTS_OUT = Counter("nexus_gateway_points_published_total",
                     "Points in batch messages acknowledged by the broker (re-sends included; see points_confirmed)")
MESSAGES_OUT = Counter("nexus_gateway_messages_published_total", "Messages acknowledged by the broker", ["kind"])
PUBLISH_ERRORS = Counter("nexus_gateway_publish_errors_total", "Publishes the broker rejected")
QUEUE_DEPTH = Gauge("nexus_gateway_publish_queue_depth", "Device batches waiting to be published")
BREAKER_STATE = Gauge("nexus_gateway_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open", ["device"])
BREAKER_OPENS = Counter("nexus_gateway_breaker_opens_total", "Times the circuit breaker opened", ["device"])
WRITES = Counter("nexus_gateway_writes_total", "Write commands by result (ok, error, refused, busy)",
                 ["device", "result"])
DEVICES = Gauge("nexus_gateway_devices", "Devices this gateway polls now")
SPOOLED = Counter("nexus_gateway_spooled_messages_total", "Batch messages written to the disk buffer")
SPOOL_BYTES = Gauge("nexus_gateway_spool_bytes", "Bytes in the disk buffer")
SPOOL_FULL = Counter("nexus_gateway_spool_full_total", "Times a batch waited because the disk buffer was full")
SPOOL_ERRORS = Counter("nexus_gateway_spool_errors_total", "Disk errors writing the buffer (retried, nothing dropped)")
# end-to-end delivery: a batch message is delivered when ingestion confirms its commit
POINTS_CONFIRMED = Counter("nexus_gateway_points_confirmed_total", "Points whose commit in the historian was confirmed")
MESSAGES_CONFIRMED = Counter("nexus_gateway_messages_confirmed_total", "Batch messages confirmed by ingestion")
WAITING_MESSAGES = Gauge("nexus_gateway_waiting_messages", "Batch messages in the spool, not yet confirmed")
WAITING_POINTS = Gauge("nexus_gateway_waiting_points", "Points in the spool, not yet confirmed")
RESENT = Counter("nexus_gateway_resent_messages_total", "Batch messages sent again (why: timeout, reconnect)", ["why"])
NO_SUBSCRIBERS = Counter("nexus_gateway_no_subscribers_total",
                         "PUBACKs with reason 0x10 (no matching subscribers): not delivered, sent again")
BAD_ACKS = Counter("nexus_gateway_bad_acks_total", "Confirmation messages that did not decode")
# device fault paths: driver bugs, lost connections, device tasks that ended, bounded write answers
DRIVER_ERRORS = Counter("nexus_gateway_driver_errors_total",
                        "Unexpected driver exceptions (driver or library bugs): tags reported BAD, retried",
                        ["device", "op"])
CONNECTIONS_LOST = Counter("nexus_gateway_device_connections_lost_total", "Device connections lost while up",
                           ["device"])
DEVICE_TASK_FAILURES = Counter("nexus_gateway_device_task_failures_total",
                               "Device tasks that ended while the device was still assigned (restarted with backoff)",
                               ["device"])
DEVICES_FAILED = Gauge("nexus_gateway_devices_failed", "Assigned devices not polled because their task ended")
WRITES_UNANSWERED = Counter("nexus_gateway_write_requests_dropped_total",
                            "Write requests neither executed nor answered: too many responses already waiting",
                            ["device"])
# the Sparkplug B edge node (gateway/sparkplug/session.py), beside the JSON batch path
SPARKPLUG_MESSAGES = Counter("nexus_gateway_sparkplug_messages_total",
                             "Sparkplug messages handed to the broker (NBIRTH, DBIRTH, DDATA, ...)", ["kind"])
SPARKPLUG_POINTS = Counter("nexus_gateway_sparkplug_points_total", "Points sent in Sparkplug DDATA (history included)")
SPARKPLUG_DROPPED = Counter("nexus_gateway_sparkplug_points_dropped_total",
                            "Points the edge node did not send: queue_full (its tap's queue was full), held_full (more "
                            "read while unborn than it keeps), not_sent (their session ended first)", ["why"])
SPARKPLUG_BORN = Gauge("nexus_gateway_sparkplug_born", "1 while the edge node is born (NBIRTH sent in this session)")
SPARKPLUG_WRITES = Counter("nexus_gateway_sparkplug_writes_total", "DCMD writes by result (ok, refused)", ["result"])
