"""Tests of the configuration service (gateway_core/): REST API, auth, history, push, sharding, daemon."""
