"""Prometheus metrics of the normalizer daemon."""

from prometheus_client import Counter, Gauge

# kind: batch|tag|other (the input a message's topic belongs to)
MESSAGES_IN = Counter("nexus_normalizer_messages_in_total", "Input messages received", ["kind"])
# stream: batch|windows|events|deadletter
MESSAGES_OUT = Counter("nexus_normalizer_messages_out_total", "Output messages PUBACKed by the broker", ["stream"])
POINTS_IN = Counter("nexus_normalizer_points_in_total", "Points decoded from input messages")
POINTS_OUT = Counter("nexus_normalizer_points_out_total", "Normalized points in output batches PUBACKed by the broker")
WINDOWS_OUT = Counter("nexus_normalizer_windows_out_total", "Aggregation windows in output messages PUBACKed")
EVENTS_OUT = Counter("nexus_normalizer_alarm_events_out_total", "Alarm events in output messages PUBACKed")
# kind: oversize|topic|payload|type|unit|unexpected (normalizer.source.KINDS)
DEAD_LETTERS = Counter("nexus_normalizer_dead_letters_total",
                       "Input messages refused, published as dead letters and acknowledged", ["kind"])
INFLIGHT = Gauge("nexus_normalizer_inflight_messages",
                 "Input messages received and not yet acknowledged (their output not yet PUBACKed)")
ACKED = Counter("nexus_normalizer_acked_total", "Input messages done: every output derived from them PUBACKed")
READ_PAUSES = Counter("nexus_normalizer_read_pauses_total",
                      "Times reading from the broker paused because max_pending input messages were unacknowledged")
PUBLISH_RETRIES = Counter("nexus_normalizer_publish_retries_total",
                          "Output messages the broker or the client refused, published again after a backoff")
UNHEARD = Counter("nexus_normalizer_messages_unheard_total",
                  "Output messages the broker took but no subscription matched (nobody received them)", ["stream"])
DUPLICATE_POINTS = Counter("nexus_normalizer_duplicate_points_total",
                           "Input points dropped because a later point of the same batch had the same (tag, ts)")
CONFIRMS = Counter("nexus_normalizer_confirmations_total",
                   "Delivery confirmations to the gateways of input batches (result: sent|unsent)", ["result"])
