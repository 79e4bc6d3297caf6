"""Modbus TCP, RTU and RTU over TCP: config (no protocol library), driver, helpers, simulator."""
