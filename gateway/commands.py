"""Write commands from MQTT: validate, hand to the device's command queue, answer on ``.../response``.

Validation happens before anything reaches a device: the tag must exist and be writable, the value
must have the tag's type and fit its range (the transform's min/max, in engineering units), and the
device's bounded command queue must have room. The engineering value is turned back into the raw
value the device stores (the inverse of scale/offset). Every request gets exactly one response.
Requests for devices this gateway does not poll are left to the gateway that does.

Bounded: each device's command queue holds ``max_pending_writes`` (a full one answers "busy" at
once, counted in ``nexus_gateway_writes_total{result="busy"}``), and at most
:data:`MAX_PENDING_RESPONSES` answers are owed at a time (queued for publishing, or for writes still
waiting or running). A request beyond that is neither executed nor answered: it is counted in
``nexus_gateway_write_requests_dropped_total`` and logged, and the requester's timeout applies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gateway import metrics as m
from gateway.config import TagConfig
from gateway.errors import WriteRefused
from gateway.poller import DevicePoller, WriteCommand
from gateway.values import check_write
from nexus.mqtt import Message, MqttClient
from nexus.report import bounded_traceback, describe
from normalizer import DeviceRules, ValueRefused
from normalizer.rules import TagChain
from proto.commands import decode_request, encode_response, parse_set_topic, response_topic
from proto.errors import PayloadError
from proto.points import Point

log = logging.getLogger("gateway.commands")

MAX_PENDING_RESPONSES = 1000  #: answers owed at a time (queued to publish, or for accepted writes)


def to_raw(tag: TagConfig, value: Any, rules: DeviceRules) -> Any:
    """The raw device value for engineering ``value`` (the normalizer's inverse, then the type's
    check); :class:`WriteRefused` says why not."""
    if not tag.writable:
        raise WriteRefused(f"tag {tag.name!r} is read-only")
    try:
        raw = rules.to_raw(tag.name, value)
    except ValueRefused as exc:
        raise WriteRefused(str(exc)) from exc
    return check_write(tag.type, raw, length=tag.length)


def from_raw(tag: TagConfig, point: Point) -> Point | None:
    """A raw reading of ``tag`` in engineering units, by the normalizer's forward rules on a chain of its own
    (the poller's keeps its state: deadbands, windows, alarms); None when the rules do not report a single
    reading (storage ``windows_only``)."""
    out: list[Point] = []
    TagChain(tag).step(point, out, [], [])
    return out[0] if out else None


class Commands:
    """Routes ``<root>/cmd/<device>/<tag>/set`` requests to the device pollers of this gateway."""

    def __init__(self, root: str, mqtt: MqttClient, pollers: Callable[[str], DevicePoller | None]) -> None:
        self.root = root
        self.mqtt = mqtt
        self.pollers = pollers
        self.answered = 0
        self.dropped = 0  #: requests refused unanswered because MAX_PENDING_RESPONSES answers were owed
        self._out: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=MAX_PENDING_RESPONSES)
        self._owed = 0  # requests taken and not yet answered, plus answers queued: never above the bound

    def on_message(self, msg: Message) -> None:
        """Called for every request (never raises: a bad request gets an error response)."""
        parsed = parse_set_topic(self.root, msg.topic)
        if parsed is None:
            return
        device_id, tag_name = parsed
        poller = self.pollers(device_id)
        if poller is None:
            return  # another gateway's device (or nobody's): that gateway answers
        if self._owed >= MAX_PENDING_RESPONSES:  # every answer slot is taken: refuse before doing anything
            self.dropped += 1
            m.WRITES_UNANSWERED.labels(device_id).inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("write request dropped unanswered: %d answers already waiting to be published "
                            "(%d dropped so far)", self._owed, self.dropped, extra={"device": device_id})
            return
        self._owed += 1  # released when its one answer leaves the queue
        rid = None
        try:
            req = decode_request(msg.payload)
            rid = req.request_id
            tag = poller.device.tag(tag_name)
            if tag is None:
                raise WriteRefused(f"device {device_id!r} has no tag {tag_name!r}")
            raw = to_raw(tag, req.value, poller.rules)
        except (PayloadError, WriteRefused) as exc:
            m.WRITES.labels(device_id, "refused").inc()
            self._answer(device_id, tag_name, rid, str(exc), None)
            return
        except Exception as exc:  # noqa: BLE001 - a bug in validation answers this request, nothing escapes
            log.error("write request failed validation unexpectedly:\n%s", bounded_traceback(exc),
                      extra={"device": device_id})
            m.WRITES.labels(device_id, "refused").inc()
            self._answer(device_id, tag_name, rid, f"internal error: {describe(exc)}", None)
            return
        value = req.value
        answered = False

        def reply(error: str | None) -> None:
            nonlocal answered
            if not answered:  # exactly one answer per request, whatever path calls this
                answered = True
                self._answer(device_id, tag_name, rid, error, value)

        if not poller.submit(WriteCommand(tag, raw, reply)):
            if poller.halted is not None:
                m.WRITES.labels(device_id, "error").inc()
                reply(f"device {device_id!r} is not polled now: {poller.halted}")
            else:
                m.WRITES.labels(device_id, "busy").inc()
                reply(f"device {device_id!r} is busy: {poller.device.max_pending_writes} writes already waiting")

    def write(self, device_id: str, tag_name: str, value: Any, done: Callable[[str | None], None]) -> bool:
        """The same write path for another front end (a Sparkplug DCMD): validated, turned into the raw value,
        queued for the device's poller; ``done`` is called once with None (written) or why not. False when
        this gateway does not poll ``device_id`` (``done`` is not called then)."""
        poller = self.pollers(device_id)
        if poller is None:
            return False
        tag = poller.device.tag(tag_name)
        try:
            if tag is None:
                raise WriteRefused(f"device {device_id!r} has no tag {tag_name!r}")
            raw = to_raw(tag, value, poller.rules)
        except WriteRefused as exc:
            m.WRITES.labels(device_id, "refused").inc()
            done(str(exc))
            return True
        if not poller.submit(WriteCommand(tag, raw, done)):
            m.WRITES.labels(device_id, "error" if poller.halted is not None else "busy").inc()
            done(f"device {device_id!r} is not polled now: {poller.halted}" if poller.halted is not None
                 else f"device {device_id!r} is busy: {poller.device.max_pending_writes} writes already waiting")
        return True

    def _answer(self, device: str, tag: str, rid: str | None, error: str | None, value: Any) -> None:
        if error is not None:
            log.info("write refused: %s", error, extra={"device": device, "tag": tag})
        # never full: each request holds one of its MAX_PENDING_RESPONSES places from arrival to publishing
        self._out.put_nowait((response_topic(self.root, device, tag), encode_response(rid, error=error, value=value)))

    async def respond_loop(self, stop: asyncio.Event) -> None:
        """Publish responses (QoS 1) in order; ends when ``stop`` is set and all are out."""
        while not (stop.is_set() and self._out.empty()):
            try:
                async with asyncio.timeout(0.2):
                    topic, payload = await self._out.get()
            except TimeoutError:
                continue
            self._owed -= 1
            try:
                await self.mqtt.publish(topic, payload, qos=1)
                self.answered += 1
            except Exception as exc:  # noqa: BLE001 - a lost broker must not end the loop; the caller times out
                log.warning("write response not published: %s", exc, extra={"topic": topic})
