"""Values that devices publish on a foreign MQTT broker: config (no protocol library), driver, helpers, simulator."""
