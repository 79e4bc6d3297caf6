"""``nexus-operator``: NexusDevice custom resources reconciled into gateway_core over its REST API (kopf).

Kubernetes is one more client of gateway_core: the operator never touches the configuration store, the
broker or a gateway. See docs/operator.md for the resources, the reconcile rules and what is tested.
"""
