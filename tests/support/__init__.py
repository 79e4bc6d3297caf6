"""Helpers the tests import: plain functions and classes, no fixtures (those are in ``tests.plugins``)."""
