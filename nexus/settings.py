"""Load frozen settings dataclasses from an optional TOML file and environment variables.

Precedence: defaults < TOML file < environment. Environment names are ``<PREFIX>_<SECTION>_<FIELD>``
in upper case, e.g. ``NEXUS_INGESTION_MQTT_PORT=1884``. A bad value stops the daemon at start with a
message that names the field.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is missing or has a bad value; ``field`` names it (dotted path)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"setting {field}: {message}")
        self.field = field


def _convert(value: Any, typ: Any, field: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or value == "":
            return None
        return _convert(value, args[0], field)
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(typ) or (str,)
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
        return tuple(_convert(v, inner, field) for v in items)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            low = str(value).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected a boolean (true/false), got {value!r}")
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
        if typ is Path:
            return Path(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc) if "expected" in str(exc) else f"bad value {value!r}: {exc}", field=field) from exc
    return value


def build(cls: type[T], data: dict[str, Any], *, env: dict[str, str], env_prefix: str, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` (TOML table) overridden by ``env``."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise SettingsError(f"unknown key(s) {sorted(unknown)}; known: {sorted(known)}", field=path or cls.__name__)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        typ = hints[f.name]
        dotted = f"{path}.{f.name}" if path else f.name
        env_name = f"{env_prefix}_{f.name}".upper()
        if dataclasses.is_dataclass(typ):
            sub = data.get(f.name, {})
            if not isinstance(sub, dict):
                raise SettingsError("expected a table", field=dotted)
            kwargs[f.name] = build(typ, sub, env=env, env_prefix=env_name, path=dotted)  # type: ignore[arg-type]
        elif env_name in env:
            kwargs[f.name] = _convert(env[env_name], typ, f"{dotted} (env {env_name})")
        elif f.name in data:
            kwargs[f.name] = _convert(data[f.name], typ, dotted)
    try:
        obj = cls(**kwargs)
    except SettingsError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc), field=path or cls.__name__) from exc
    return obj


def load(cls: type[T], *, env_prefix: str, config_file: str | os.PathLike[str] | None = None,
         env: dict[str, str] | None = None) -> T:
    """Load settings: TOML file (path argument or ``<PREFIX>_CONFIG`` env var), then env overrides."""
    env = dict(os.environ if env is None else env)
    config_file = config_file or env.get(f"{env_prefix}_CONFIG".upper())
    data: dict[str, Any] = {}
    if config_file:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {config_file} not found", field="config") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_file} is not valid TOML: {exc}", field="config") from exc
    return build(cls, data, env=env, env_prefix=env_prefix)


def positive(value: float, field: str) -> None:
    """Validation helper for ``__post_init__``."""
    if not value > 0:  # also refuses NaN
        raise SettingsError(f"must be > 0, got {value}", field=field)


def port(value: int, field: str) -> None:
    if not 0 <= value <= 65535:
        raise SettingsError(f"must be a TCP port 0..65535, got {value}", field=field)
