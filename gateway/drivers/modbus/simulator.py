"""A simulated Modbus PLC (TCP, RTU over TCP, or RTU on a serial line), served by pymodbus's own server,
with moving values.

Given a device from the plant config, it serves that device's tags at their addresses, encoded
with the device's byte and word order, so the gateway reads exactly what a real PLC with that map
would give. Values move: floats follow sines, integers count and ramp, bools toggle, strings cycle
through machine states. Tags listed in ``constants`` hold a fixed value instead (tests use this to
check decoding exactly). Writes from clients are kept (the tag becomes a constant).

Run standalone: ``python -m gateway.drivers.modbus.simulator plant.toml`` serves every device of the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from typing import Any

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from devtools.animation import animated_value
from gateway.config import DeviceConfig, TagConfig, load_plant
from gateway.drivers.modbus.registers import decode, encode

log = logging.getLogger("gateway.drivers.modbus.simulator")

_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding",
             22: "holding", 23: "holding", 4: "input"}
MIN_BLOCK = 64  # registers (and bits) served per table beyond the highest tag; pymodbus checks blocks slowly


class SimulatedPlc:
    def __init__(self, device: DeviceConfig, *, constants: dict[str, Any] | None = None,
                 counters: frozenset[str] = frozenset(),
                 host: str = "127.0.0.1", port: int | None = None, serial_port: str = "") -> None:
        self.device = device
        self.constants = dict(constants or {})
        #: tags whose value is the number of reads that returned them (1, 2, 3, ...): a deterministic
        #: source for loss tests (every value read once must be stored once)
        self.counters = dict.fromkeys(counters, 0)
        self.host = host
        self.serial_port = serial_port  #: for modbus_rtu devices: the line to serve instead of the device's
        self.port = port if port is not None else device.conn.port
        self._by_table: dict[str, list[TagConfig]] = {}
        for tag in device.tags:
            self._by_table.setdefault(tag.address.table, []).append(tag)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self.reads = 0

    def _regs_of(self, tag: TagConfig, value: Any) -> list[int]:
        a = tag.address
        return encode(value, tag.type, byte_order=a.byte_order, word_order=a.word_order, length=tag.length)

    async def _action(self, fc: int, start: int, address: int, count: int, regs: list[int],
                      values: list[int] | list[bool] | None) -> None:
        table = _FC_TABLE.get(fc)
        if table is None:
            return None
        if values is not None:
            self._remember_write(table, address, list(values), start)
            return None
        self.reads += 1
        t = time.time()
        end = address + count  # the request, in registers or bits
        for tag in self._by_table.get(table, ()):
            a = tag.address
            if a.address >= end or a.address + a.count <= address:
                continue  # outside the requested range: not worth encoding (bench/gateway.py)
            if tag.name in self.counters:
                self.counters[tag.name] += 1
                value = self.counters[tag.name]
            elif tag.name in self.constants:
                value = self.constants[tag.name]
            else:
                value = animated_value(tag, t)
            if table in ("coil", "discrete"):
                idx, bit = a.address // 16 - start, a.address % 16
            elif tag.type == "bool" and a.bit is not None:
                idx, bit = a.address - start, a.bit
            else:
                idx = -1
            if idx >= 0:
                regs[idx] = (regs[idx] | (1 << bit)) if value else (regs[idx] & ~(1 << bit))
            else:
                off = a.address - start
                regs[off:off + a.count] = self._regs_of(tag, value)
        return None

    def _remember_write(self, table: str, address: int, values: list[Any], start: int) -> None:
        """A client wrote: tags fully inside the written range keep the written value."""
        for tag in self._by_table.get(table, ()):
            a = tag.address
            if table == "coil" and address <= a.address < address + len(values):
                self.constants[tag.name] = bool(values[a.address - address])
            elif table == "holding" and address <= a.address and a.address + a.count <= address + len(values):
                off = a.address - address
                self.constants[tag.name] = decode([int(v) for v in values[off:off + a.count]], tag.type,
                                                  byte_order=a.byte_order, word_order=a.word_order, bit=a.bit)

    async def start(self) -> None:
        block = max((t.address.address + t.address.count for t in self.device.tags), default=0) + MIN_BLOCK
        bits = [SimData(0, count=block, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=block, values=0, datatype=DataType.REGISTERS)]
        conn = self.device.conn
        dev = SimDevice(id=conn.unit_id, simdata=(bits, list(bits), regs, list(regs)), action=self._action)
        if conn.transport == "rtu":  # serve the serial line (tests use one end of a pseudo-terminal pair)
            self._server = ModbusSerialServer(dev, framer=FramerType.RTU, port=self.serial_port or conn.serial_port,
                                              baudrate=conn.baudrate, parity=conn.parity, bytesize=conn.bytesize,
                                              stopbits=conn.stopbits)
        else:
            framer = FramerType.RTU if conn.transport == "rtu_tcp" else FramerType.SOCKET
            self._server = ModbusTcpServer(dev, framer=framer, address=(self.host, self.port))
        await self._server.serve_forever(background=True)  # listens, then returns

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
            self._server = None


async def serve_plant(path: str, stop: asyncio.Event) -> None:
    plant = load_plant(path)
    # Modbus TCP and RTU-over-TCP devices; other protocols have their own simulators
    plcs = [SimulatedPlc(d, host="127.0.0.1") for d in plant.devices if d.protocol in ("modbus_tcp", "modbus_rtu_tcp")]
    for plc in plcs:
        await plc.start()
        log.info("simulated PLC %s on 127.0.0.1:%d (%d tags)", plc.device.id, plc.port, len(plc.device.tags))
    await stop.wait()
    for plc in plcs:
        await plc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve simulated Modbus TCP PLCs for the devices of a plant config")
    ap.add_argument("plant", help="plant config (TOML/YAML); each device is served on 127.0.0.1:<port>")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_plant(args.plant, stop)

    asyncio.run(amain())


if __name__ == "__main__":
    main()
