"""gateway_core: the REST configuration service (devices, tags, gateways) on PostgreSQL.

Not built yet: this package is the home of the config service, hot reload over ``$nexus/config``
and gateway sharding (see the project's issue list). Today gateways read a plant config file.
"""
