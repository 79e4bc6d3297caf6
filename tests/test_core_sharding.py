"""Weighted rendezvous hashing (stability, weights) and the release-before-assign handoff of
gateway_core.sharding.Assigner, driven by a fake clock (pure bookkeeping, no broker)."""

from __future__ import annotations

from typing import Any

from gateway_core.sharding import Assigner, choose
from proto.config import DeviceMessage, GatewayStatus

DEVICES = [f"dev-{i}" for i in range(3000)]


def assign(weights: dict[str, float]) -> dict[str, str | None]:
    return {d: choose(d, weights) for d in DEVICES}


def test_join_moves_only_devices_to_the_new_gateway() -> None:
    before = assign({"a": 1, "b": 1, "c": 1})
    after = assign({"a": 1, "b": 1, "c": 1, "d": 1})
    moved = [d for d in DEVICES if before[d] != after[d]]
    assert all(after[d] == "d" for d in moved)
    assert 0.20 < len(moved) / len(DEVICES) < 0.30  # about a quarter


def test_death_moves_only_the_dead_gateways_devices() -> None:
    before = assign({"a": 1, "b": 1, "c": 1})
    after = assign({"a": 1, "c": 1})
    moved = [d for d in DEVICES if before[d] != after[d]]
    assert moved and all(before[d] == "b" for d in moved)
    assert {d for d in DEVICES if before[d] == "b"} == set(moved)


def test_shares_follow_capacity() -> None:
    counts: dict[Any, int] = {}
    for gw in assign({"small": 100, "big": 300, "none": 0}).values():
        counts[gw] = counts.get(gw, 0) + 1
    assert "none" not in counts
    assert abs(counts["big"] / len(DEVICES) - 0.75) < 0.03
    assert choose("x", {}) is None and choose("x", {"a": 0}) is None
    # deterministic, independent of dict order
    assert choose("dev-7", {"a": 1, "b": 2}) == choose("dev-7", {"b": 2, "a": 1})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status(gw: str, devices: Any = (), capacity: int = 10, online: bool = True) -> GatewayStatus:
    return GatewayStatus(
        gateway=gw, online=online, capacity=capacity, applied_revision=0, devices=tuple(devices), ts=0
    )


def by_device(msgs: list[DeviceMessage]) -> dict[str, str | None]:
    return {m.device_id: m.gateway for m in msgs}


def make(n: int = 40) -> tuple[Assigner, Clock]:
    clock = Clock()
    a = Assigner(heartbeat_timeout=6.0, handoff_timeout=10.0, clock=clock)
    a.load(((f"d{i}", {"id": f"d{i}"}, 1) for i in range(n)), 1)
    return a, clock


def test_join_releases_first_then_assigns_when_the_old_gateway_let_go() -> None:
    a, clock = make()
    a.on_status(status("A"))
    first = a.step()
    assert by_device(first) == {f"d{i}": "A" for i in range(40)} and all(m.device for m in first)
    a.on_status(status("A", a.assigned("A")))
    assert a.step() == []  # steady state: nothing to send

    a.on_status(status("B"))
    moving = sorted(d for d in a.devices if choose(d, {"A": 10, "B": 10}) == "B")
    assert 10 < len(moving) < 30
    step = a.step()
    assert by_device(step) == dict.fromkeys(moving)  # release only, nobody is told to take them yet
    assert all(m.device is not None for m in step)  # a release is not a tombstone
    assert a.step() == []  # A still lists them: wait

    # A lets go of half of them: exactly those go to B
    half = moving[: len(moving) // 2]
    a.on_status(status("A", set(a.assigned("A")) | set(moving[len(half) :])))
    assert by_device(a.step()) == dict.fromkeys(half, "B")
    # the rest time out
    clock.now += 10.5
    a.on_status(status("A", set(a.assigned("A")) | set(moving[len(half) :])))
    a.on_status(status("B", half))
    assert by_device(a.step()) == dict.fromkeys(moving[len(half):], "B")
    assert a.step() == []
    assert set(a.assigned("A")) | set(a.assigned("B")) == set(a.devices)


def test_dead_gateway_devices_move_at_once_without_release() -> None:
    a, clock = make()
    a.on_status(status("A"))
    a.on_status(status("B"))
    a.step()
    on_b = a.assigned("B")
    a.on_status(status("A", a.assigned("A")))
    a.on_status(status("B", on_b))
    a.on_status(status("B", online=False))  # will
    assert by_device(a.step()) == dict.fromkeys(on_b, "A")
    # heartbeat timeout: A stops reporting
    clock.now += 5.0
    assert a.step() == [] and a.live() == {"A": 10}
    clock.now += 1.5
    assert by_device(a.step()) == dict.fromkeys(a.devices) and a.live() == {}


def test_changes_tombstones_and_stale_news() -> None:
    a, _ = make(2)
    a.on_status(status("A"))
    a.step()
    a.device_changed("d0", {"id": "d0", "interval_ms": 5}, 3)
    a.device_changed("d0", {"id": "d0", "interval_ms": 9}, 2)  # older news (commit order vs. call order)
    a.device_changed("d1", None, 4)
    msgs = a.step()
    assert [(m.device_id, m.gateway, m.device, m.revision) for m in msgs] == [
        ("d1", None, None, 4),
        ("d0", "A", {"id": "d0", "interval_ms": 5}, 4),
    ]
    assert a.step() == []


def test_a_device_polled_by_an_unexpected_gateway_is_released_first() -> None:
    # after a service restart: B's retained status says it polls d0, but d0 now belongs elsewhere
    a, _ = make(1)
    a.on_status(status("A", capacity=10))
    a.on_status(status("B", ["d0"], capacity=0))
    target = choose("d0", {"A": 10})
    assert target == "A"
    assert by_device(a.step()) == {"d0": None}
    a.on_status(status("B", [], capacity=0))
    assert by_device(a.step()) == {"d0": "A"}


def test_a_gateway_polling_a_deleted_device_gets_a_tombstone_again() -> None:
    a, clock = make(1)
    a.on_status(status("A", ["d0", "gone"]))  # "gone" was deleted while the service was down
    msgs = a.step()
    assert [(m.device_id, m.gateway, m.device) for m in msgs] == [
        ("gone", None, None),
        ("d0", "A", {"id": "d0"}),
    ]
    assert a.step() == []  # not again before the handoff timeout ...
    clock.now += 10.5
    a.on_status(status("A", ["d0", "gone"]))
    assert [(m.device_id, m.device) for m in a.step()] == [
        ("gone", None)
    ]  # ... but after it, if still polled
    a.on_status(status("A", ["d0"]))
    clock.now += 10.5
    a.on_status(status("A", ["d0"]))
    assert a.step() == []


def test_grace_keeps_gateways_alive_while_the_service_cannot_hear_them() -> None:
    a, clock = make(1)
    a.on_status(status("A"))
    a.step()
    for _ in range(5):  # broker away for 10 s: the service calls grace() instead of step()
        clock.now += 2.0
        a.grace()
    assert a.step() == [] and a.live() == {"A": 10}
