"""Tests of the gateway daemon (gateway/): plant config, spool, core mode, writes, device faults, hot reload."""
