"""Ingestion workers: MQTT shared subscription → batches → binary COPY into TimescaleDB/PostgreSQL."""
