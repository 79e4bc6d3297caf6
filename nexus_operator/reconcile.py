"""Reconciling one NexusDevice with gateway_core: apply (create, update with If-Match), remove (the
finalizer), and the status written back.

Rules (docs/operator.md):

- The device's owner mark is ``<instance>:<namespace>/<name>``. A device that exists with another mark,
  or none (made through the REST API), is never changed or deleted: the resource shows Ready False,
  reason NotOwned, until the annotation ``edge.nexus.io/adopt: "true"`` lets it take over an unowned one.
- Updates carry ``If-Match`` with the revision just read. A device at another revision than the one this
  resource applied was changed outside the operator: a warning (a Kubernetes event, through kopf's
  logger), then the spec is applied over it: the resource is the source of truth of the devices it owns.
- A 4xx answer is a Degraded condition with gateway_core's own message, not retried until the spec
  changes or the next drift check; 5xx and connection errors are :class:`TemporaryError` (kopf retries
  them with backoff), shown as Ready False and Degraded True, reason CoreUnavailable, meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nexus_operator import conditions as c
from nexus_operator import metrics as m
from nexus_operator.client import CoreClient, Remote
from nexus_operator.errors import CoreRefused, SpecError, TemporaryError
from nexus_operator.resources import ADOPT, PlantIndex, device_id, document, owner_mark

Logger = logging.Logger | logging.LoggerAdapter[Any]


class Reconciler:
    def __init__(self, client: CoreClient, *, instance: str) -> None:
        self.client = client
        self.instance = instance

    async def apply(
        self,
        *,
        spec: Mapping[str, Any],
        meta: Mapping[str, Any],
        status: Mapping[str, Any],
        patch: Any,
        logger: Logger,
        plants: PlantIndex | None = None,
    ) -> str:
        """Make gateway_core's device match the resource; returns the result (the metric's label)."""
        generation = meta.get("generation")
        try:
            doc = document(spec, meta, plants)
        except SpecError as exc:
            return self._refused(status, patch, logger, generation, c.INCOMPLETE, str(exc), "incomplete")
        owner = owner_mark(self.instance, meta.get("namespace"), str(meta["name"]))
        try:
            result, remote = await self._apply(doc, owner, meta, status, logger)
        except TemporaryError as exc:
            m.RECONCILES.labels("unavailable").inc()
            outcome = c.Outcome(ready=False, reason=c.UNAVAILABLE, message=str(exc), degraded=True)
            c.write(status, patch, {"conditions": c.conditions(status.get("conditions"), outcome, generation)})
            raise
        except CoreRefused as exc:
            reason = c.INVALID if exc.status == 422 else c.UNAUTHORIZED if exc.status in (401, 403) else c.REFUSED
            where = f" (field {exc.field})" if exc.field else ""
            return self._refused(status, patch, logger, generation, reason, f"{exc.detail}{where}", "refused")
        if result == "not_owned":
            m.RECONCILES.labels("not_owned").inc()
            message = (f"device {doc['id']!r} exists in gateway_core and is not this resource's "
                       f"(owner {remote.owner!r}); it is left as it is")
            outcome = c.Outcome(ready=False, reason=c.NOT_OWNED, message=message, degraded=True)
            c.write(status, patch, {"observedGeneration": generation, "deviceId": doc["id"],
                                    "conditions": c.conditions(status.get("conditions"), outcome, generation)})
            if c.condition(status, "Ready").get("reason") != c.NOT_OWNED:
                logger.warning("%s", message)
            return "not_owned"
        m.RECONCILES.labels(result).inc()
        if result == "repaired":
            m.REPAIRS.inc()
        old = status.get("deviceId")
        if old and old != remote.id:  # spec.deviceId changed: the device of the old id is this resource's too
            logger.info("spec.deviceId is now %s: removing device %s", remote.id, old)
            await self._delete_owned(str(old), owner, logger)
        health, health_message = await self._health(remote)
        problem = {"Error": c.DEVICE_ERROR, "Unassigned": c.UNASSIGNED}.get(health)
        outcome = c.Outcome(ready=True, reason=c.APPLIED, message=f"applied at revision {remote.revision}",
                            degraded=problem is not None, degraded_reason=problem, degraded_message=health_message)
        repairs = int(status.get("repairs") or 0) + (result == "repaired")
        c.write(status, patch, {
            "observedGeneration": generation, "deviceId": remote.id, "owner": owner,
            "appliedRevision": remote.revision, "gateway": remote.gateway, "health": health,
            "healthMessage": health_message, "repairs": repairs,
            "conditions": c.conditions(status.get("conditions"), outcome, generation),
        })
        return result

    async def _apply(
        self, doc: dict[str, Any], owner: str, meta: Mapping[str, Any], status: Mapping[str, Any], logger: Logger
    ) -> tuple[str, Remote]:
        """(result, the device now); result "not_owned": the device found, left alone."""
        remote = await self.client.get_device(doc["id"])
        if remote is None:
            if status.get("appliedRevision") is not None and status.get("deviceId") == doc["id"]:
                logger.warning("device %s was deleted in gateway_core outside the operator; creating it again",
                               doc["id"])
                return "repaired", await self.client.create_device(doc, owner=owner)
            logger.info("creating device %s in gateway_core", doc["id"])
            return "applied", await self.client.create_device(doc, owner=owner)
        if remote.owner != owner:
            adopt = remote.owner is None and (meta.get("annotations") or {}).get(ADOPT) == "true"
            if not adopt:
                return "not_owned", remote
            logger.warning("adopting device %s (made through the REST API) at revision %s", doc["id"],
                           remote.revision)
            return "applied", await self._put(doc, remote, owner=owner)
        applied = status.get("appliedRevision")
        changed_outside = applied is not None and remote.revision != applied
        if remote.device == doc:
            return "unchanged", remote
        if changed_outside:
            logger.warning("device %s differs from its resource (changed outside the operator: at revision %s, "
                           "this resource applied %s); applying the spec again", doc["id"], remote.revision, applied)
            return "repaired", await self._put(doc, remote)
        return "applied", await self._put(doc, remote)

    async def _put(self, doc: dict[str, Any], remote: Remote, *, owner: str | None = None) -> Remote:
        try:
            return await self.client.put_device(doc["id"], doc, if_match=remote.revision, owner=owner)
        except CoreRefused as exc:
            if exc.status == 412:  # changed between our GET and PUT: read it again soon
                raise TemporaryError(f"device {doc['id']!r} changed while being applied: {exc.detail}",
                                     status=412) from exc
            raise

    def _refused(self, status: Mapping[str, Any], patch: Any, logger: Logger, generation: int | None,
                 reason: str, message: str, result: str) -> str:
        m.RECONCILES.labels(result).inc()
        if c.condition(status, "Degraded").get("message") != message:
            logger.error("%s: %s", reason, message)
        outcome = c.Outcome(ready=False, reason=reason, message=message, degraded=True)
        c.write(status, patch, {"observedGeneration": generation,
                                "conditions": c.conditions(status.get("conditions"), outcome, generation)})
        return result

    async def _health(self, remote: Remote) -> tuple[str, str]:
        """Polling / Assigning / Error / Unassigned / Unknown, and why: from the gateway's status."""
        if remote.gateway is None:
            return "Unassigned", "no live gateway polls the device"
        try:
            gw = await self.client.gateway(remote.gateway)
        except (TemporaryError, CoreRefused) as exc:
            return "Unknown", f"gateway {remote.gateway}: {exc}"
        if gw is None:
            return "Unknown", f"gateway {remote.gateway} is not known to gateway_core"
        error = (gw.get("errors") or {}).get(remote.id)
        if error:
            return "Error", f"gateway {remote.gateway}: {str(error)[:500]}"
        if remote.id in (gw.get("polling") or ()):
            return "Polling", f"polled by gateway {remote.gateway}"
        return "Assigning", f"assigned to gateway {remote.gateway}, not reported polled yet"

    async def remove(self, *, spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
                     logger: Logger) -> str:
        """The finalizer: delete the device if it is this resource's (If-Match: the revision read)."""
        name = str(meta["name"])
        dev = str(status.get("deviceId") or device_id(spec, name))
        return await self._delete_owned(dev, owner_mark(self.instance, meta.get("namespace"), name), logger)

    async def _delete_owned(self, dev: str, owner: str, logger: Logger) -> str:
        remote = await self.client.get_device(dev)
        if remote is None:
            m.DELETES.labels("gone").inc()
            return "gone"
        if remote.owner != owner:
            logger.info("device %s is not this resource's (owner %r): left in gateway_core", dev, remote.owner)
            m.DELETES.labels("not_owned").inc()
            return "not_owned"
        try:
            await self.client.delete_device(dev, if_match=remote.revision)
        except CoreRefused as exc:
            if exc.status == 412:
                raise TemporaryError(f"device {dev!r} changed while being deleted: {exc.detail}", status=412) from exc
            raise
        logger.info("deleted device %s (revision %s) from gateway_core", dev, remote.revision)
        m.DELETES.labels("deleted").inc()
        return "deleted"
