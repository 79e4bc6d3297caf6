"""Settings of the operator (env prefix ``NEXUS_OPERATOR``; TOML via ``NEXUS_OPERATOR_CONFIG``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nexus.common import LogSettings, OpsSettings
from nexus.settings import SettingsError, positive

_INSTANCE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, kw_only=True)
class CoreSettings:
    url: str = "http://127.0.0.1:8080"  #: gateway_core's REST API, without /api/v1
    #: API key with role engineer (env NEXUS_OPERATOR_CORE_API_KEY, from a Secret); never logged
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 10.0  #: seconds for one request, connect included

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise SettingsError(f"must start with http:// or https://, got {self.url[:64]!r}", field="core.url")
        positive(self.timeout, "core.timeout")


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: names this operator in the owner mark of the devices it makes (``<instance>:<namespace>/<name>``):
    #: two operators on one gateway_core (two clusters) need two instances
    instance: str = "nexus-operator"
    namespaces: tuple[str, ...] = ()  #: namespaces watched (comma separated in env); empty: clusterwide must be on
    clusterwide: bool = False  #: watch every namespace (needs the ClusterRole)
    drift_interval: float = 60.0  #: seconds between comparisons of each device with its resource
    retry_first: float = 2.0  #: seconds before the first retry of a temporary failure; doubles per retry
    retry_cap: float = 120.0  #: longest wait between retries, seconds
    core: CoreSettings = field(default_factory=CoreSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        if not _INSTANCE.match(self.instance):
            raise SettingsError(f"must be a DNS label (a-z, 0-9, '-', '.'), got {self.instance[:64]!r}",
                                field="instance")
        if not self.clusterwide and not self.namespaces:
            raise SettingsError("name the namespaces to watch, or set clusterwide", field="namespaces")
        if self.clusterwide and self.namespaces:
            raise SettingsError("give namespaces or clusterwide, not both", field="namespaces")
        for name in ("drift_interval", "retry_first", "retry_cap"):
            positive(getattr(self, name), name)

    def retry_delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0-based) of a temporary failure: capped exponential."""
        return float(min(self.retry_cap, self.retry_first * 2 ** min(retry, 30)))
