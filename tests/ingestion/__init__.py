"""Tests of the ingestion daemon (ingestion/): delivery, database faults, poison messages, schema."""
