"""The status a NexusDevice shows: conditions Ready and Degraded (reason and message), device health.

Only what changed goes into kopf's status patch, so a drift check that finds everything in order writes
nothing (no watch event, no new resourceVersion).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: reasons (CamelCase, as Kubernetes conditions have them)
APPLIED = "Applied"
INVALID = "Invalid"  #: gateway_core answered 422
#: the spec cannot become a document yet: a UNS level missing, its NexusPlant not (yet) there; the drift
#: timer tries again (no request: it costs nothing, and the NexusPlant may come)
INCOMPLETE = "Incomplete"
REFUSED = "Refused"  #: another 4xx (409 a duplicate UNS path, 404 ...)
UNAUTHORIZED = "Unauthorized"  #: 401/403: the operator's API key
NOT_OWNED = "NotOwned"  #: the device exists and is not this resource's
UNAVAILABLE = "CoreUnavailable"  #: 5xx, timeout, connection refused (retried with backoff)
DEVICE_ERROR = "DeviceError"  #: applied, and the gateway reports an error for the device
UNASSIGNED = "Unassigned"  #: applied, no live gateway polls it
AS_EXPECTED = "AsExpected"


@dataclass(frozen=True, slots=True)
class Outcome:
    ready: bool
    reason: str
    message: str
    #: the device is not as the resource says, or not polled: refused, not owned, gateway_core unavailable,
    #: device error, unassigned
    degraded: bool
    #: Degraded's own reason and message where they are not Ready's (applied, and not polled)
    degraded_reason: str | None = None
    degraded_message: str | None = None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(previous: Any, outcome: Outcome, generation: int | None) -> list[dict[str, Any]]:
    """Ready and Degraded for ``outcome``; lastTransitionTime kept where the status did not change."""
    old = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    out = []
    for kind, value, reason, message in (
        ("Ready", outcome.ready, outcome.reason, outcome.message),
        ("Degraded", outcome.degraded, (outcome.degraded_reason or outcome.reason) if outcome.degraded else AS_EXPECTED,
         (outcome.degraded_message or outcome.message) if outcome.degraded else ""),
    ):
        status = "True" if value else "False"
        before = old.get(kind, {})
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        out.append({"type": kind, "status": status, "reason": reason, "message": message[:1000],
                    "observedGeneration": generation, "lastTransitionTime": since or now()})
    return out


def write(status: Mapping[str, Any], patch: Any, new: Mapping[str, Any]) -> None:
    """Put the keys of ``new`` that differ from ``status`` into kopf's ``patch.status``."""
    for key, value in new.items():
        if key == "conditions" and _same_conditions(status.get(key), value):
            continue
        if key != "conditions" and status.get(key) == value:
            continue
        patch.status[key] = value


def _same_conditions(old: Any, new: list[dict[str, Any]]) -> bool:
    return [dict(c) for c in old or ()] == new


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The condition ``kind`` of a status as shown (empty when absent)."""
    for c in status.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c
    return {}
