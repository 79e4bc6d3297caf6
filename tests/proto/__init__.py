"""Tests of the wire contracts (proto/): points and UNS topics, the config contract, decoder fuzz."""
