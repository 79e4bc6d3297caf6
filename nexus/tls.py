"""TLS contexts from settings, checked at load, and what a failed handshake means in words.

Clients (every daemon's broker connection): TLS 1.2 or newer, the peer's chain verified against a CA
file (or the system's trusted CAs), its host name checked unless a setting named for the risk turns
that off, optionally a client certificate. Servers (gateway_core's REST API): the certificate and key
files checked the same way before uvicorn loads them.

Every file problem is a :class:`~nexus.settings.SettingsError` naming the field at start; a private key is
never decrypted by prompting on a terminal (OpenSSL's default when no passphrase is given).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from nexus.report import bounded
from nexus.settings import SettingsError

MIN_VERSION = ssl.TLSVersion.TLSv1_2


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails: paho drops the socket of a failed handshake unclosed,
    and a client retrying against an untrusted broker would leak one file descriptor per attempt."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except BaseException:
            self.close()
            raise


def readable_file(path: Path, field: str) -> None:
    """Refuse a path that is not an existing, readable file, naming ``field``."""
    if not path.exists():
        raise SettingsError(f"{path} does not exist", field=field)
    if not path.is_file():
        raise SettingsError(f"{path} is not a file", field=field)
    if not os.access(path, os.R_OK):
        raise SettingsError(f"{path} is not readable by this process (uid {os.geteuid()})", field=field)


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, password: str | None, prefix: str,
                key_field: str = "key_file", password_field: str = "key_password") -> None:
    """``load_cert_chain`` that never prompts, its errors as SettingsErrors naming the field at fault."""
    asked = False

    def no_passphrase() -> bytes:
        nonlocal asked
        asked = True
        return b""

    try:
        ctx.load_cert_chain(str(cert), str(key), password if password is not None else no_passphrase)
    except ssl.SSLError as exc:
        text = bounded(str(exc), 160)
        if "KEY_VALUES_MISMATCH" in text:
            raise SettingsError(f"{key} is not the key of the certificate in {prefix}.cert_file ({cert})",
                                field=f"{prefix}.{key_field}") from exc
        if asked:
            raise SettingsError(f"{key} is encrypted: give its passphrase in {prefix}.{password_field}",
                                field=f"{prefix}.{password_field}") from exc
        if password is not None and ("bad decrypt" in text or "PEM lib" in text):
            raise SettingsError(f"does not decrypt {prefix}.{key_field} {key} ({text})",
                                field=f"{prefix}.{password_field}") from exc
        raise SettingsError(f"cannot load the certificate {cert} with the key {key}: {text}",
                            field=f"{prefix}.cert_file") from exc


def client_context(*, ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
                   key_password: str | None, check_hostname: bool, prefix: str = "mqtt") -> ssl.SSLContext:
    """A client context: TLS >= 1.2, the server's chain verified against ``ca_file`` (the system's
    trusted CAs when None), its name checked when ``check_hostname``, and our certificate if given."""
    for name, path in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if path is not None:
            readable_file(path, f"{prefix}.{name}")
    if cert_file is not None and key_file is None:
        raise SettingsError(f"required with {prefix}.cert_file (the client certificate's private key)",
                            field=f"{prefix}.key_file")
    if key_file is not None and cert_file is None:
        raise SettingsError(f"required with {prefix}.key_file", field=f"{prefix}.cert_file")
    if key_password is not None and key_file is None:
        raise SettingsError(f"only with {prefix}.key_file", field=f"{prefix}.key_password")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as exc:
        raise SettingsError(f"{ca_file} holds no usable PEM CA certificate ({bounded(str(exc), 160)})",
                            field=f"{prefix}.ca_file") from exc
    ctx.minimum_version = MIN_VERSION
    ctx.sslsocket_class = _ClosingSSLSocket
    ctx.check_hostname = check_hostname  # the chain is verified either way (verify_mode CERT_REQUIRED)
    if cert_file is not None and key_file is not None:
        _load_chain(ctx, cert_file, key_file, key_password, prefix)
    return ctx


def check_server_files(*, cert_file: Path | None, key_file: Path | None, key_password: str | None,
                       ca_file: Path | None, prefix: str) -> None:
    """Check a server's certificate, key and client-CA settings as uvicorn will load them."""
    if cert_file is None:
        for name, value in (("key_file", key_file), ("ca_file", ca_file), ("key_password", key_password)):
            if value is not None:
                raise SettingsError(f"only with {prefix}.tls_cert_file", field=f"{prefix}.tls_{name}")
        return
    if key_file is None:
        raise SettingsError(f"required with {prefix}.tls_cert_file", field=f"{prefix}.tls_key_file")
    for name, path in (("cert_file", cert_file), ("key_file", key_file), ("ca_file", ca_file)):
        if path is not None:
            readable_file(path, f"{prefix}.tls_{name}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, cert_file, key_file, key_password, prefix, "tls_key_file", "tls_key_password")
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except ssl.SSLError as exc:
            raise SettingsError(f"{ca_file} holds no usable PEM CA certificate ({bounded(str(exc), 160)})",
                                field=f"{prefix}.tls_ca_file") from exc


#: OpenSSL alert names a server sends about our certificate, and what they mean for the operator
_PEER_ALERTS = {
    "CERTIFICATE_REQUIRED": "the broker requires a client certificate (settings mqtt.cert_file, mqtt.key_file)",
    "CERTIFICATE_EXPIRED": "the broker refused our client certificate {cert}: it has expired",
    "UNKNOWN_CA": "the broker refused our client certificate {cert}: not signed by a CA it trusts",
    "BAD_CERTIFICATE": "the broker refused our client certificate {cert}",
    "CERTIFICATE_UNKNOWN": "the broker refused our client certificate {cert}",
    "UNSUPPORTED_CERTIFICATE": "the broker refused our client certificate {cert}: unsupported",
    "PROTOCOL_VERSION": "no TLS version both sides accept (we require TLS 1.2 or newer)",
    "WRONG_VERSION_NUMBER": "the broker did not answer in TLS: is mqtt.port a TLS listener?",
}


def describe_tls_error(exc: ssl.SSLError, *, ca_file: Path | None, cert_file: Path | None,
                       host: str) -> tuple[str, str]:
    """(cause, one line for the log) of a failed TLS handshake or a TLS alert read afterwards."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = str(exc.verify_message or exc.reason or exc)
        against = f"CA file {ca_file}" if ca_file else "the system's trusted CAs (setting mqtt.ca_file)"
        if "mismatch" in why.lower():
            return "tls_hostname", (f"certificate verify failed: {why} The broker's certificate does not name "
                                    f"mqtt.host {host!r}; connect by a name it lists, or set "
                                    "mqtt.tls_insecure_no_hostname_check (the chain is still verified)")
        cause = "tls_expired" if "expired" in why else "tls_untrusted"
        return cause, f"certificate verify failed: {why} (broker certificate checked against {against})"
    return describe_tls_text(str(exc), cert_file=cert_file)


def describe_tls_text(text: str, *, cert_file: Path | None) -> tuple[str, str]:
    """(cause, line) of an OpenSSL error text, e.g. an alert the broker sent after the handshake."""
    upper = text.upper()
    for alert, meaning in _PEER_ALERTS.items():
        if alert in upper:
            return "tls_refused", f"TLS: {meaning.format(cert=cert_file or '(none configured)')} ({bounded(text, 160)})"
    return "tls", f"TLS handshake failed: {bounded(text, 200)}"
