"""Weighted rendezvous hashing (stability, weights) and the release-before-assign handoff of
gateway_core.sharding.Assigner, driven by a fake clock (pure bookkeeping, no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_core.settings import Settings
from gateway_core.sharding import Assigner, choose
from nexus.settings import SettingsError, load
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


def status(gw: str, devices: Any = (), capacity: int = 10, online: bool = True,
           config_seq: int = 2**62) -> GatewayStatus:
    """A status; by default one sent after every config message so far was applied."""
    return GatewayStatus(gateway=gw, online=online, capacity=capacity, applied_revision=0, devices=tuple(devices),
                         ts=0, config_seq=config_seq)


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
    assert by_device(a.step()) == dict.fromkeys(moving[len(half) :], "B")
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


def test_an_offline_gateway_is_forgotten_after_forget_after_without_moving_anything() -> None:
    a, clock = make()
    a.on_status(status("A"))
    a.on_status(status("B"))
    a.step()
    a.on_status(status("A", a.assigned("A")))
    a.on_status(status("B", a.assigned("B")))
    on_b = a.assigned("B")
    a.on_status(status("B", online=False))  # will
    assert by_device(a.step()) == dict.fromkeys(on_b, "A")  # moved at once, as before

    def beat(seconds: float) -> None:  # time passes, A keeps reporting
        clock.now += seconds
        a.on_status(status("A", a.assigned("A")))

    beat(0.0)
    owner = dict(a.owner)
    assert "B" not in owner.values() and a.step() == []
    beat(20.0)
    assert a.forget(20.0) == [] and "B" in a.gateways  # not longer than forget_after yet
    beat(0.5)
    assert a.forget(20.0) == ["B"] and set(a.gateways) == {"A"}
    assert a.forget(20.0) == []
    # nothing to publish and nothing moved: B owned nothing any more
    assert a.step() == [] and a.owner == owner and a.live() == {"A": 10}
    # a live gateway is never forgotten, however long it has been known
    for _ in range(100):
        beat(2.0)
    assert a.forget(20.0) == [] and a.step() == []

    # B comes back: it simply re-announces itself and gets its share again (release first)
    a.on_status(status("B"))
    assert a.gateways["B"].online and a.gateways["B"].offline_since is None
    assert by_device(a.step()) == dict.fromkeys(on_b)
    a.on_status(status("A", set(a.assigned("A")) - set(on_b)))
    assert by_device(a.step()) == dict.fromkeys(on_b, "B")


def test_forget_counts_from_the_moment_a_gateway_went_offline() -> None:
    a, clock = make(4)
    a.on_status(status("A"))
    a.on_status(status("B"))
    a.step()
    # B falls silent: dead at the heartbeat timeout, forgotten forget_after after that
    clock.now += 5.0
    a.on_status(status("A", a.assigned("A")))
    clock.now += 1.5
    a.step()
    assert a.live() == {"A": 10} and a.gateways["B"].offline_since == clock.now
    clock.now += 19.0
    assert a.forget(20.0) == []
    clock.now += 1.5
    assert a.forget(20.0) == ["B"]
    # an offline gateway seen for the first time (a will retained on the broker): from now on
    a.on_status(status("C", online=False))
    clock.now += 20.0
    assert a.forget(20.0) == []
    clock.now += 0.5
    assert a.forget(20.0) == ["C"]
    # so is a retained status too old to count as live
    a.on_status(GatewayStatus(gateway="D", online=True, capacity=10, ts=1), wall_ms=10_000)
    assert not a.gateways["D"].online
    clock.now += 20.5
    assert a.forget(20.0) == ["D"]
    # back before forget_after: the clock starts again at the next death
    a.on_status(status("E"))
    a.on_status(status("E", online=False))
    clock.now += 15.0
    a.on_status(status("E"))
    a.on_status(status("E", online=False))
    clock.now += 15.0
    assert a.forget(20.0) == [] and "E" in a.gateways
    assert all(o in (None, "A") for o in a.owner.values())


def test_nobody_is_forgotten_right_after_a_reconnect() -> None:
    a, clock = make(1)
    a.on_status(status("B", online=False))
    clock.now += 100.0
    a.grace()  # (re)connected: retained statuses are on their way, B's may say it is back
    clock.now += 5.0
    assert a.forget(50.0) == []
    clock.now += 1.5
    assert a.forget(50.0) == ["B"]


def test_forget_after_setting() -> None:
    assert Settings().forget_after == 3600.0
    env = {"NEXUS_CORE_FORGET_AFTER": "90", "NEXUS_CORE_HEARTBEAT_TIMEOUT": "10"}
    assert load(Settings, env_prefix="NEXUS_CORE", env=env).forget_after == 90.0
    for bad in ("10", "5", "nan"):
        with pytest.raises(SettingsError) as exc:
            load(Settings, env_prefix="NEXUS_CORE", env={**env, "NEXUS_CORE_FORGET_AFTER": bad})
        assert exc.value.field == "forget_after"


def test_a_gateway_that_missed_its_release_is_told_again() -> None:
    a, clock = make()
    a.on_status(status("A"))
    a.on_status(status("B"))
    a.step()
    on_a, on_b = a.assigned("A"), a.assigned("B")
    a.on_status(status("A", on_a))
    a.on_status(status("B", set(on_b) | {on_a[0]}))  # B polls one of A's devices (missed a release)
    assert a.step() == []  # not at once: statuses can lag an assignment
    clock.now += 10.5  # one handoff timeout later it is repeated, naming its owner: B stops it
    a.on_status(status("A", on_a))
    a.on_status(status("B", set(on_b) | {on_a[0]}))
    assert by_device(a.step()) == {on_a[0]: "A"}
    assert a.step() == []  # and not again before another handoff timeout


def test_a_handoff_waits_for_a_status_sent_after_the_release() -> None:
    a, _clock = make()
    a.on_status(status("A"))
    a.step()
    a.on_status(status("A", a.assigned("A")))
    a.on_status(status("B"))
    release = a.step()
    moving = sorted(m.device_id for m in release)
    assert moving and all(m.gateway is None and m.seq > 0 for m in release)
    # a status of A that does not list the devices, but was sent before A applied the release
    # (an old heartbeat, or A had not started polling them yet): not enough
    a.on_status(status("A", set(a.assigned("A")), config_seq=release[0].seq - 1))
    assert a.step() == []
    a.on_status(status("A", set(a.assigned("A")), config_seq=max(m.seq for m in release)))
    assert by_device(a.step()) == dict.fromkeys(moving, "B")
