"""The Sparkplug B host application of ingestion (docs/sparkplug.md): :mod:`ingestion.sparkplug.host`."""
