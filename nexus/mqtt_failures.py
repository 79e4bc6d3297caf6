"""Why a broker connection, subscription or publish failed, in one line that names the cause, and the
same failure again and again logged once in a while rather than at every retry.

The causes an operator meets when securing a broker: bad credentials (CONNACK 0x86, or 0x87 from
mosquitto), an untrusted, expired or misnamed broker certificate, a client certificate the broker
wants or refuses, a topic its ACL denies (SUBACK / PUBACK 0x87). None of them is fatal: the client
retries with its backoff, as the operator may fix the broker's side without restarting us.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from nexus.common import MqttSettings
from nexus.report import bounded, describe
from nexus.tls import describe_tls_error, describe_tls_text

log = logging.getLogger("nexus.mqtt")

#: seconds between two log lines of one failure repeating without change (the count is in the line)
REPEAT_LOG_S = 300.0


class MqttError(Exception):
    """A publish or connect failed; ``reason`` is the MQTT reason code text (or "stopped",
    "disconnected"), ``code`` the broker's numeric reason code (0 when it was not the broker's)."""

    def __init__(self, message: str, *, reason: str = "", code: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


#: CONNACK reason codes (MQTT 5, 3.2.2.2) an operator can act on, in words
_CONNACK = {
    0x84: "unsupported protocol version (the broker does not accept MQTT 5)",
    0x85: "client identifier not valid (setting mqtt.client_id)",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x9F: "connection rate exceeded",
}


def connack_refusal(code: int, reason: str, username: str | None) -> str:
    """The message of a refused CONNACK; never the password."""
    who = f"for user {username!r}" if username else "without a user name (settings mqtt.username, mqtt.password)"
    text = _CONNACK.get(code, reason)
    if code == 0x86:
        return f"broker refused the connection: bad user name or password (CONNACK 0x86) {who}"
    if code == 0x87:  # mosquitto answers a wrong password with 0x87, not 0x86
        return (f"broker refused the connection: not authorized (CONNACK 0x87) {who}: bad user name or "
                "password, or not allowed to connect")
    return f"broker refused the connection: {text} (CONNACK 0x{code:02X})"


def describe_connect_failure(exc: BaseException, settings: MqttSettings, socket_error: str) -> tuple[str, str]:
    """(cause, one line) for a failed connect: ``exc`` as raised by the connect, ``socket_error`` the
    last error paho logged on the socket meanwhile (a TLS alert read while waiting for CONNACK)."""
    s = settings
    if isinstance(exc, ssl.SSLError):
        return describe_tls_error(exc, ca_file=s.ca_file, cert_file=s.cert_file, host=s.host)
    if isinstance(exc, MqttError):
        if exc.code:
            cause = "bad_credentials" if exc.code in (0x86, 0x87) else "refused"
            return cause, str(exc)
        if socket_error and s.tls_enabled and ("SSL" in socket_error or "alert" in socket_error):
            return describe_tls_text(socket_error, cert_file=s.cert_file)
        text = f"{exc} ({bounded(socket_error, 200)})" if socket_error else str(exc)
        if not s.tls_enabled:  # a TLS listener drops a client that does not start with a TLS hello
            text += "; the broker closed the connection before CONNACK: if mqtt.port is a TLS listener, set mqtt.tls"
        return "connection_lost", text
    if isinstance(exc, TimeoutError):
        return "timeout", (f"no answer within {s.connect_timeout:g} s (TCP connect, TLS handshake or CONNACK; "
                           "setting mqtt.connect_timeout)")
    if isinstance(exc, ConnectionRefusedError):
        return "refused", f"connection refused (nothing listens on {s.host}:{s.port}?)"
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve mqtt.host {s.host!r}: {exc.strerror}"
    return "network", describe(exc)


class RepeatLog:
    """Counts failures by key; :meth:`note` says when one is worth a log line: the first time, then at
    most every ``interval`` seconds while it repeats. At most ``max_keys`` keys are remembered (the
    oldest forgotten); with one key, any other failure is new and logged at once."""

    def __init__(self, *, interval: float = REPEAT_LOG_S, max_keys: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._seen: dict[Any, list[float]] = {}  # key -> [time last logged, occurrences not logged since]

    def note(self, key: Any) -> int | None:
        """None: do not log this one. Else log it, saying how many times it happened unlogged before."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None:
            while len(self._seen) >= self.max_keys:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = [now, 0]
            return 0
        if now - seen[0] >= self.interval:
            skipped = int(seen[1])
            seen[0], seen[1] = now, 0
            return skipped
        seen[1] += 1
        return None

    def clear(self) -> None:
        self._seen.clear()


def repeated(skipped: int) -> str:
    """The tail of a log line for a failure logged again after ``skipped`` unlogged repeats."""
    return f" (the same {skipped} more times since it was last logged)" if skipped else ""


class PahoErrors(logging.Logger):
    """paho's log (``enable_logger``), of which only the last error is kept, not logged: the socket-level
    cause of a lost connection, e.g. the TLS alert a broker sends when it refuses our certificate."""

    def __init__(self) -> None:
        super().__init__("nexus.mqtt.paho")
        self.last = ""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= logging.ERROR:  # a cheap comparison: paho logs every packet at DEBUG
            self.last = bounded(str(msg) % args if args else str(msg), 300)

    def take(self) -> str:
        last, self.last = self.last, ""
        return last


class FailureLog:
    """One client's failure log lines: connects (a changed cause logged at once, the same one again every
    :data:`REPEAT_LOG_S`, at DEBUG between), and refusals by topic (SUBACK / PUBACK), likewise."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.paho = PahoErrors()
        self._connects = RepeatLog(max_keys=1)
        self._refusals = RepeatLog()
        self._last_refused: tuple[float, str] = (0.0, "")  # (monotonic time, topic) of the last refused publish

    def connect_failed(self, exc: BaseException, delay: float, attempt: int) -> None:
        cause, text = describe_connect_failure(exc, self.settings, self.paho.take())
        where = f"{self.settings.host}:{self.settings.port}"
        extra = {"client_id": self.client_id, "cause": cause, "attempt": attempt}
        skipped = self._connects.note(text)
        if skipped is None:
            log.debug("mqtt connect to %s failed again: %s; retry in %.1f s", where, text, delay, extra=extra)
        else:
            log.warning("mqtt connect to %s failed: %s; retry in %.1f s%s", where, text, delay, repeated(skipped),
                        extra=extra)

    def connected(self, failures: int) -> None:
        self._connects.clear()
        if failures:
            log.info("mqtt connected after %d failed attempts", failures, extra={"client_id": self.client_id})

    def subscription_refused(self, topic: str, rc: Any, delay: float) -> None:
        code = int(getattr(rc, "value", 0x80))
        if (skipped := self._refusals.note(("sub", code, topic))) is not None:
            log.warning("mqtt subscription to %s refused by the broker: %s (SUBACK 0x%02X); asking again in %.1f s%s",
                        bounded(topic), rc, code, delay, repeated(skipped),
                        extra={"client_id": self.client_id, "topic": bounded(topic), "cause": "acl"})

    def publish_refused(self, topic: str, reason: Any, code: int) -> str:
        """Log (unless it is a repeat) and return the refusal's text, for the publisher's exception."""
        text = f"broker refused publish to {bounded(topic)}: {reason} (PUBACK 0x{code:02X})"
        self._last_refused = (time.monotonic(), topic)
        if (skipped := self._refusals.note(("pub", code, topic))) is not None:
            log.warning("mqtt %s%s", text, repeated(skipped),
                        extra={"client_id": self.client_id, "topic": bounded(topic), "cause": "acl"})
        return text

    def disconnect_note(self) -> str:
        """Why the broker may have dropped us: mosquitto 2.0 closes a connection right after it refused a
        publish (eclipse-mosquitto/mosquitto#2579)."""
        at, topic = self._last_refused
        if topic and time.monotonic() - at < 2.0:
            return f" (right after the broker refused publish to {bounded(topic)}; mosquitto then drops the client)"
        return ""
