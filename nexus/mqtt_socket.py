"""paho's socket on the asyncio event loop: read when it is readable, write while paho has bytes to send.

Under TLS a readable socket is not the whole story: OpenSSL reads whole records, so decrypted bytes
may wait in its buffer while the socket itself has nothing more to signal. paho reads one packet per
call when nothing is in flight, so without a look at ``SSLSocket.pending()`` a subscriber would stall
with messages already received (until the next byte from the broker, a keepalive later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from nexus.common import MqttSettings

log = logging.getLogger("nexus.mqtt")


class SocketOnLoop:
    """Registers paho's socket callbacks on ``client``; :meth:`pause` / :meth:`resume` stop and start
    reading (backpressure: the broker's window and TCP then hold the rest back)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: paho.Client) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._client = client
        self.sock: Any = None  #: the connected socket (plain or TLS), None between connections
        self.paused = False
        self._writer_on = False
        client.on_socket_open = self._cb_socket_open
        client.on_socket_close = self._cb_socket_close
        client.on_socket_register_write = self._cb_register_write
        client.on_socket_unregister_write = self._cb_unregister_write

    def pause(self) -> None:
        if not self.paused and self.sock is not None:
            self._loop.remove_reader(self.sock)
        self.paused = True

    def resume(self) -> None:
        was, self.paused = self.paused, False
        if was and self.sock is not None:
            self._loop.add_reader(self.sock, self._read)
            self._more_later(self.sock)

    def _read(self) -> None:
        sock = self.sock
        self._client.loop_read()
        self._more_later(sock)

    def _more_later(self, sock: Any) -> None:
        """Read again soon (after other callbacks) while OpenSSL holds bytes the socket will not signal."""
        if isinstance(sock, ssl.SSLSocket) and sock is self.sock and not self.paused and sock.pending():
            self._loop.call_soon(self._read_pending, sock)

    def _read_pending(self, sock: Any) -> None:
        if sock is self.sock and not self.paused:
            self._read()

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    # -- paho callbacks (on the loop thread, except socket-open during connect, in an executor) ----
    def _cb_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho never sets TCP_NODELAY: Nagle + delayed ACK held small control messages (status,
        # first batch after a reload) ~40 ms (measured by bench/reload.py)
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def attach() -> None:
            self.sock = sock
            if not self.paused:
                self._loop.add_reader(sock, self._read)
                self._more_later(sock)  # a TLS handshake may have read the broker's first bytes already
        self._on_loop(attach)

    def _cb_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def detach() -> None:
            if self.sock is sock:
                self.sock = None
            if fd >= 0:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
            self._writer_on = False
        self._on_loop(detach)

    def _cb_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def on() -> None:
            if not self._writer_on:
                self._writer_on = True
                self._loop.add_writer(sock, client.loop_write)
        self._on_loop(on)

    def _cb_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def off() -> None:
            if self._writer_on and fd >= 0:
                self._loop.remove_writer(fd)
            self._writer_on = False
        self._on_loop(off)


def new_paho_client(settings: MqttSettings, client_id: str, *, manual_ack: bool) -> paho.Client:
    """paho's client for our settings: MQTT 5, user name, TLS; no limits of its own (ours bound the window)."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=paho.MQTTv5, manual_ack=manual_ack)
    # our window semaphore bounds what is in flight; paho's own limit would scan every in-flight
    # message on each PUBACK (9% of a gateway's CPU at 5k msgs/s, bench/gateway.py)
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)  # our own window bounds what is queued
    if settings.username:
        c.username_pw_set(settings.username, settings.password)
    elif settings.password:
        log.warning("mqtt.password is set without mqtt.username: not sent", extra={"client_id": client_id})
    if settings.tls_enabled:
        c.tls_set_context(settings.tls_context())
        if settings.tls_insecure_no_hostname_check:
            log.warning("mqtt TLS host name check is OFF (setting mqtt.tls_insecure_no_hostname_check): any "
                        "certificate from %s is accepted for %s", settings.ca_file or "the system's CAs",
                        settings.host, extra={"client_id": client_id})
    return c
