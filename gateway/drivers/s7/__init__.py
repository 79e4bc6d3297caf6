"""Siemens S7 (ISO-on-TCP): config (no protocol library), driver, helpers, simulator."""
