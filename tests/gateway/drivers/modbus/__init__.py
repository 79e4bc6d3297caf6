"""Modbus TCP/RTU driver and register codec (gateway/drivers/modbus/) against pymodbus."""
