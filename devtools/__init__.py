"""Developer tools, apart from the runtime: ``nexus demo`` (the whole pipeline on this machine),
local mosquitto and PostgreSQL servers in temp folders, and helpers for tests and benchmarks.

No daemon imports this package at run time (tests/test_layout.py checks); the protocol simulators
(``gateway/drivers/<protocol>/simulator.py``) and the tests do.
"""
