"""A small expander of what Grafana does to a PostgreSQL panel's SQL before the database sees it, so the
dashboards' queries can be run in tests (Grafana itself cannot be installed here).

Grafana works in two steps, and so does ``Expander.expand``:

1. *Template variables* (done by Grafana's frontend): ``$name``, ``${name}`` and ``${name:format}``, and the
   built-ins ``$__interval``, ``$__interval_ms``, ``$__range``, ``$__range_s``, ``$__range_ms``, ``$__from``,
   ``$__to``. A variable's value is inserted as Grafana's SQL datasources do: a multi-value or include-all
   variable becomes a list of quoted literals (``'a','b'``, for ``IN ($tag)``); a single-value one is
   inserted unquoted with its quotes doubled (write ``'$device'``). Formats: ``sqlstring`` and
   ``singlequote`` (each value quoted, joined by commas), ``raw`` and ``csv`` (verbatim, joined by commas),
   ``text`` (the displayed texts, joined by `` + ``). A name that is neither defined nor built in raises
   ``KeyError``: a dashboard referring to a variable it does not declare fails its test.
2. *Macros* (done by Grafana's PostgreSQL backend, ``pkg/tsdb/grafana-postgresql-datasource/macros.go``):
   ``$__time(col)``, ``$__timeEpoch(col)``, ``$__timeFilter(col)`` (``col BETWEEN 'from' AND 'to'``, RFC 3339
   in UTC), ``$__timeFrom()``, ``$__timeTo()``, ``$__timeGroup(col, interval[, fill])`` (``floor(extract(epoch
   from col)/s)*s``, or ``time_bucket('<s>s', col)`` when the datasource has ``timescaledb: true``; the fill
   argument only matters to Grafana's post-processing and is ignored), ``$__timeGroupAlias`` (the same with
   ``AS "time"``), ``$__unixEpochFilter(col)``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``. As in Grafana,
   a macro's arguments cannot contain ``)``.

``$__interval`` is Grafana's automatic interval: the range divided by the panel's max data points (1000 here,
about a wide panel's width in pixels), rounded by Grafana's table (``roundInterval``) and not below the
datasource's ``timeInterval`` (its "min time interval").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# Grafana's kbn.roundInterval: (upper bound of the raw interval in ms, the interval used)
_ROUND: tuple[tuple[int, int], ...] = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1_500, 1_000),
    (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000), (45_000, 30_000),
    (90_000, 60_000), (210_000, 120_000), (450_000, 300_000), (750_000, 600_000), (1_050_000, 900_000),
    (1_500_000, 1_200_000), (2_700_000, 1_800_000), (5_400_000, 3_600_000), (9_000_000, 7_200_000),
    (16_200_000, 10_800_000), (24_300_000, 21_600_000), (64_800_000, 43_200_000), (129_600_000, 86_400_000),
    (604_800_000, 604_800_000), (1_814_400_000, 2_592_000_000))
_YEAR_MS = 31_536_000_000

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
             "y": _YEAR_MS}

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}")
_MACRO = re.compile(r"\$__(\w+)\(([^)]*)\)")
_BUILTIN_INTERVALS = {"__interval", "__interval_ms", "__range", "__range_s", "__range_ms", "__from", "__to"}


def round_interval(ms: int) -> int:
    for bound, value in _ROUND:
        if ms <= bound:
            return value
    return _YEAR_MS


def parse_duration(text: str) -> int:
    """``'5m'``, ``1h``, ``500ms`` ... in milliseconds (quotes around it are allowed, as in Grafana)."""
    m = re.fullmatch(r"'?(\d+)(ms|s|m|h|d|w|y)'?", text.strip())
    if not m:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def format_duration(ms: int) -> str:
    """The way Grafana writes ``$__interval``: the largest unit that divides it (``1m``, ``20s``, ``500ms``)."""
    for unit in ("y", "w", "d", "h", "m", "s"):
        if ms >= _UNITS_MS[unit] and ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


def _rfc3339(t: datetime) -> str:
    """Go's RFC3339Nano in UTC, as Grafana writes $__timeFilter's bounds."""
    text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Variable:
    """A template variable's current selection: values (what goes into the SQL) and their texts."""

    values: tuple[str, ...]
    texts: tuple[str, ...]
    multi: bool = False  #: multi-value or include-all: inserted as a list of quoted literals

    def format(self, fmt: str | None) -> str:
        if fmt is None:
            if self.multi:
                return ",".join(_quote(v) for v in self.values)
            return ",".join(v.replace("'", "''") for v in self.values)
        if fmt in ("sqlstring", "singlequote"):
            return ",".join(_quote(v) for v in self.values)
        if fmt in ("raw", "csv"):
            return ",".join(self.values)
        if fmt == "text":
            return " + ".join(self.texts)
        raise ValueError(f"variable format {fmt!r} is not supported by this expander")


@dataclass
class Expander:
    """Expands a panel's SQL for one time range, selection of variables and datasource."""

    start: datetime
    end: datetime
    variables: dict[str, Variable] = field(default_factory=dict)
    timescaledb: bool = False  #: the datasource's jsonData.timescaledb: $__timeGroup as time_bucket
    min_interval_ms: int = 1_000  #: the datasource's jsonData.timeInterval
    max_data_points: int = 1_000

    @property
    def range_ms(self) -> int:
        return int((self.end - self.start) / timedelta(milliseconds=1))

    @property
    def interval_ms(self) -> int:
        return max(self.min_interval_ms, round_interval(self.range_ms // self.max_data_points))

    def builtin(self, name: str) -> str:
        return {
            "__interval": format_duration(self.interval_ms),
            "__interval_ms": str(self.interval_ms),
            "__range": format_duration(self.range_ms),
            "__range_s": str(self.range_ms // 1000),
            "__range_ms": str(self.range_ms),
            "__from": str(int(self.start.timestamp() * 1000)),
            "__to": str(int(self.end.timestamp() * 1000)),
        }[name]

    def expand(self, sql: str) -> str:
        return self.expand_macros(self.expand_variables(sql))

    def expand_variables(self, sql: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            fmt = m.group(3)
            if name in _BUILTIN_INTERVALS:
                return self.builtin(name)
            if name.startswith("__"):
                return m.group(0)  # a macro: step 2
            if name not in self.variables:
                raise KeyError(f"template variable ${name} is not defined")
            return self.variables[name].format(fmt)

        return _VARIABLE.sub(sub, sql)

    def expand_macros(self, sql: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, args = m.group(1), [a.strip() for a in m.group(2).split(",") if a.strip()]
            return self.macro(name, args)

        out = _MACRO.sub(sub, sql)
        if "$" in out:
            raise ValueError(f"unexpanded '$' left in: {out[:300]}")
        return out

    def macro(self, name: str, args: Sequence[str]) -> str:
        frm, to = _rfc3339(self.start), _rfc3339(self.end)
        if name == "time":
            return f'{args[0]} AS "time"'
        if name == "timeEpoch":
            return f'extract(epoch from {args[0]}) AS "time"'
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{frm}' AND '{to}'"
        if name == "timeFrom":
            return f"'{frm}'"
        if name == "timeTo":
            return f"'{to}'"
        if name in ("timeGroup", "timeGroupAlias"):
            if len(args) < 2:
                raise ValueError(f"$__{name} needs a column and an interval: {args}")
            seconds = parse_duration(args[1]) / 1000
            s = f"{seconds:g}"
            group = (f"time_bucket('{s}s',{args[0]})" if self.timescaledb
                     else f"floor(extract(epoch from {args[0]})/{s})*{s}")
            return group + (' AS "time"' if name == "timeGroupAlias" else "")
        if name == "unixEpochFilter":
            return f"{args[0]} >= {int(self.start.timestamp())} AND {args[0]} <= {int(self.end.timestamp())}"
        if name == "unixEpochFrom":
            return str(int(self.start.timestamp()))
        if name == "unixEpochTo":
            return str(int(self.end.timestamp()))
        raise ValueError(f"macro $__{name} is not supported by this expander")


def variable_from_rows(rows: Sequence[Sequence[object]], columns: Sequence[str], *, multi: bool) -> Variable:
    """A query variable's options from its SQL's rows, selected as Grafana does by default: every option
    for a multi/all variable ("All"), the first one otherwise. Columns ``__text``/``__value`` are used when
    present (in either order), else the first column is both."""
    if "__value" in columns and "__text" in columns:
        vi, ti = columns.index("__value"), columns.index("__text")
    else:
        vi = ti = 0
    options = [(str(r[vi]), str(r[ti])) for r in rows if r[vi] is not None]
    if not multi:
        options = options[:1]
    return Variable(tuple(v for v, _ in options), tuple(t for _, t in options), multi=multi)
