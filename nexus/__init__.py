"""Plumbing shared by every NEXUS daemon (settings, logging, signals, ops HTTP, MQTT, backoff)
and the ``nexus`` command for local operations (``nexus demo``)."""
