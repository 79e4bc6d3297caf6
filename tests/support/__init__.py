"""Helpers the tests import: plain functions and classes, no fixtures (those are in ``tests.plugins``)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
"""The repository root (the working directory and PYTHONPATH of the daemons a test starts)."""
