"""OPC UA (poll or subscribe): config (no protocol library), driver, helpers, simulator."""
