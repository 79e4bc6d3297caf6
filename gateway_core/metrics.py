"""Prometheus metrics of the configuration service."""

from prometheus_client import Counter, Gauge

REVISION = Gauge("nexus_core_config_revision", "Current global configuration revision")
GATEWAYS_LIVE = Gauge("nexus_core_gateways_live", "Gateways counted live (heartbeat within the timeout)")
MESSAGES = Counter("nexus_core_config_messages_total", "Config messages published", ["kind"])
HANDOFFS = Counter("nexus_core_handoffs_total", "Devices released from one live gateway before assignment")
HANDOFF_TIMEOUTS = Counter(
    "nexus_core_handoff_timeouts_total",
    "Releases whose old gateway still listed the device at the handoff timeout",
)
BAD_MESSAGES = Counter("nexus_core_bad_messages_total", "Control messages that broke the contract", ["topic"])
WRITES = Counter("nexus_core_tag_writes_total", "Tag write commands", ["result"])
LOGINS = Counter(
    "nexus_core_logins_total", "Login attempts of users",
    ["result"],  # ok, bad_password, unknown_user, disabled, rate_limited
)
REFRESHES = Counter(
    "nexus_core_token_refreshes_total", "Refresh token exchanges",
    ["result"],  # ok, unknown, expired, revoked, reuse, disabled
)
LIVE_CLIENTS = Gauge("nexus_core_live_clients", "WebSocket clients of /api/v1/live")
LIVE_TAGS = Gauge("nexus_core_live_tags", "Tags whose current state the live stream keeps")
LIVE_MESSAGES = Counter(
    "nexus_core_live_state_messages_total", "Per-tag state messages received for the live stream",
    ["result"],  # ok, removed, bad (not a tag state), overflow (beyond live.max_cached_tags)
)
LIVE_DROPPED = Counter(
    "nexus_core_live_dropped_total", "Changes not queued for a client already holding live.max_tags pending tags"
)
HEALTH_DEVICES = Gauge("nexus_core_health_devices", "Devices whose newest health report the service keeps")
HEALTH_MESSAGES = Counter(
    "nexus_core_health_messages_total", "Device health messages received",
    ["result"],  # ok, removed (cleared), bad (off the contract), overflow (beyond live.max_health_devices)
)
