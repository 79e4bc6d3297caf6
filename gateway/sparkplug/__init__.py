"""The gateway as a Sparkplug B edge node (docs/sparkplug.md): :mod:`gateway.sparkplug.node`."""
