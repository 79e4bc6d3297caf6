"""Daemon plumbing: logging, the stop event wired to signals, capped backoff with jitter."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

import orjson

from nexus.common import LogSettings
from nexus.settings import SettingsError, load

log = logging.getLogger("nexus.runtime")

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields (device, topic, tag) become keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                          if k not in _STD_ATTRS and not k.startswith("_"))
        line = f"{time.strftime('%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f" [{extras}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(settings: LogSettings) -> None:
    """Configure the root logger once, from ``main()``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # protocol libraries log every lost connection with a traceback; the gateway reports it once per device
    for noisy in ("pymodbus", "asyncio", "snap7", "paho"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for noisiest in ("asyncua", "pycomm3"):
        logging.getLogger(noisiest).setLevel(max(logging.CRITICAL, root.level))


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop``; a second signal forces exit."""
    loop = asyncio.get_running_loop()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.error("second %s: forcing exit", signame)
            os._exit(130)
        log.info("%s received: shutting down", signame)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)


class Backoff:
    """Capped exponential backoff with full jitter: ``await backoff.wait(stop)`` between attempts."""

    def __init__(self, *, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.first * (2 ** self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep the next delay; return True if ``stop`` was set meanwhile."""
        return await sleep_or_stop(self.next_delay(), stop)


async def sleep_or_stop(delay: float, stop: asyncio.Event) -> bool:
    """Sleep ``delay`` seconds unless ``stop`` is set first; return whether it was set."""
    if stop.is_set():
        return True
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def wait_first(*waits: Awaitable[Any], timeout: float | None = None) -> None:
    """Wait until the first of ``waits`` is done, or ``timeout`` seconds. Coroutines are run as tasks
    of this call and cancelled when it returns (or is cancelled); futures and tasks passed in are the
    caller's and are left as they are, done or not. The one way every daemon waits for "this, unless
    that" (an event unless stop, a task unless stop, room in a window unless the connection drops)."""
    mine = [asyncio.ensure_future(w) for w in waits if asyncio.iscoroutine(w)]
    theirs = [w for w in waits if not asyncio.iscoroutine(w)]
    try:
        await asyncio.wait([*mine, *(asyncio.ensure_future(w) for w in theirs)], timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in mine:
            task.cancel()


async def wait_or_stop(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for ``event`` unless ``stop`` is set first; return whether ``stop`` is set."""
    if stop.is_set():
        return True
    await wait_first(event.wait(), stop.wait())
    return stop.is_set()


def run_main(run: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    """``asyncio.run`` a daemon's ``run`` coroutine and turn its result into an exit code."""
    try:
        return asyncio.run(run()) or 0
    except KeyboardInterrupt:
        return 130


class _DaemonSettings(Protocol):
    """What :func:`daemon_main` needs of a daemon's ``Settings``."""

    @property
    def log(self) -> LogSettings: ...


_S = TypeVar("_S", bound=_DaemonSettings)


def daemon_main(
    name: str, settings_cls: type[_S], env_prefix: str, run: Callable[[_S], Coroutine[Any, Any, int]]
) -> int:
    """The whole ``main()`` of a daemon: settings (file argument, env), logging, ``asyncio.run``."""
    try:
        settings = load(settings_cls, env_prefix=env_prefix, config_file=(sys.argv[1] if len(sys.argv) > 1 else None))
    except SettingsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log)
    return run_main(lambda: run(settings))

