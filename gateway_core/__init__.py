"""gateway_core: the configuration service of NEXUS Edge.

A REST API (FastAPI) over a versioned configuration store in PostgreSQL (devices, tags, revisions,
audit, API keys), pushing every committed change to the gateways over MQTT and sharding the devices
across the live gateways by weighted rendezvous hashing. Contract: :mod:`proto.config`;
overview: ``docs/gateway_core.md``.
"""
