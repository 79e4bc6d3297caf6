"""Modbus configuration keys: the connection (TCP, RTU on a serial line, RTU over TCP) and the
address of a tag (table, zero-based address, type, bit, byte and word order). Imports no Modbus
library: gateway_core validates configs with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config import choice, get, int_in, parse_type
from gateway.drivers.modbus.registers import BYTE_ORDERS, register_count
from gateway.errors import ConfigError

TABLES = ("holding", "input", "coil", "discrete")
MAX_REGISTERS = 125  # Modbus limit per read of registers (function codes 3 and 4)
MAX_BITS = 2000  # Modbus limit per read of coils/discrete inputs (function codes 1 and 2)
REGISTER_TYPES = ("bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string")
PARITIES = ("N", "E", "O")

DEVICE_KEYS = frozenset({"host", "port", "unit_id", "byte_order", "word_order", "max_registers", "max_gap",
                         "serial_port", "baudrate", "parity", "bytesize", "stopbits", "connections"})
TAG_KEYS = frozenset({"table", "address", "type", "length", "bit", "byte_order", "word_order"})


@dataclass(frozen=True, kw_only=True)
class ModbusConnection:
    transport: str  #: tcp | rtu (serial) | rtu_tcp (RTU frames over a TCP socket)
    host: str = "127.0.0.1"
    port: int = 502
    serial_port: str = ""  #: e.g. /dev/ttyUSB0, for rtu
    baudrate: int = 19200
    parity: str = "N"  #: N | E | O
    bytesize: int = 8
    stopbits: int = 1
    unit_id: int = 1  #: Modbus unit (slave) id
    byte_order: str = "big"
    word_order: str = "big"
    max_registers: int = MAX_REGISTERS  #: largest coalesced register read
    max_gap: int = 8  #: unused registers a coalesced read may span between two tags
    connections: int = 1  #: TCP connections kept to the device; reads of one poll are spread over them


@dataclass(frozen=True, kw_only=True)
class ModbusAddress:
    table: str  #: holding | input | coil | discrete
    address: int  #: zero-based register or bit address
    count: int  #: registers (or bits) read for this tag
    bit: int | None = None  #: for bool in a register: bit 0 (LSB) .. 15
    byte_order: str  #: resolved: the tag's or the device's
    word_order: str


def parse_connection(d: dict[str, Any], where: str, protocol: str) -> ModbusConnection:
    transport = {"modbus_tcp": "tcp", "modbus_rtu": "rtu", "modbus_rtu_tcp": "rtu_tcp"}[protocol]
    serial_port = get(d, "serial_port", str, where, "")
    if transport == "rtu" and not serial_port:
        raise ConfigError("'serial_port' is required for modbus_rtu (e.g. \"/dev/ttyUSB0\")", where=where)
    if transport != "rtu" and serial_port:
        raise ConfigError(f"'serial_port' is only for modbus_rtu, not {protocol}", where=where)
    connections = int_in(d, "connections", 1, 16, where, 1)
    if transport == "rtu" and connections != 1:
        raise ConfigError("a serial line has one connection: 'connections' must be 1 for modbus_rtu", where=where)
    return ModbusConnection(
        transport=transport, host=get(d, "host", str, where, "127.0.0.1"), port=int_in(d, "port", 1, 65535, where, 502),
        serial_port=serial_port, baudrate=int_in(d, "baudrate", 300, 4_000_000, where, 19200),
        parity=choice(get(d, "parity", str, where, "N"), PARITIES, "parity", where),
        bytesize=int_in(d, "bytesize", 5, 8, where, 8), stopbits=int_in(d, "stopbits", 1, 2, where, 1),
        unit_id=int_in(d, "unit_id", 0, 255, where, 1),
        byte_order=choice(get(d, "byte_order", str, where, "big"), BYTE_ORDERS, "byte_order", where),
        word_order=choice(get(d, "word_order", str, where, "big"), BYTE_ORDERS, "word_order", where),
        max_registers=int_in(d, "max_registers", 1, MAX_REGISTERS, where, MAX_REGISTERS),
        max_gap=int_in(d, "max_gap", 0, MAX_REGISTERS, where, 8), connections=connections)


def parse_tag(d: dict[str, Any], where: str, conn: ModbusConnection) -> tuple[ModbusAddress, str, int]:
    table = choice(get(d, "table", str, where, "holding"), TABLES, "table", where)
    bits_table = table in ("coil", "discrete")
    dtype = parse_type(d, where, "bool" if bits_table else "uint16", REGISTER_TYPES)
    if bits_table and dtype != "bool":
        raise ConfigError(f"a {table} tag must have type bool, not {dtype}", where=where)
    address = int_in(d, "address", 0, 65535, where)
    length = get(d, "length", int, where, 0)
    if dtype == "string" and not 1 <= length <= 250:
        raise ConfigError("a string tag needs 'length' (characters) in 1..250", where=where)
    bit = get(d, "bit", int, where, None)
    if bit is not None and (dtype != "bool" or bits_table or not 0 <= bit <= 15):
        raise ConfigError("'bit' (0..15) is only for bool tags in holding/input registers", where=where)
    if get(d, "writable", bool, where, False) and table in ("input", "discrete"):
        article = "an" if table == "input" else "a"
        raise ConfigError(f"{article} {table} tag is read-only on Modbus; it cannot be writable", where=where)
    count = 1 if bits_table else register_count(dtype, length)
    if address + count > 65536:
        raise ConfigError("value runs past address 65535", where=where)
    addr = ModbusAddress(
        table=table, address=address, count=count, bit=bit,
        byte_order=choice(d["byte_order"], BYTE_ORDERS, "byte_order", where) if "byte_order" in d else conn.byte_order,
        word_order=choice(d["word_order"], BYTE_ORDERS, "word_order", where) if "word_order" in d else conn.word_order)
    return addr, dtype, length


