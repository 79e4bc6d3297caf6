"""Whole-pipeline tests with real processes: end to end, fault matrix, broker outage, ops, demo."""
