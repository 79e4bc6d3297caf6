"""MQTT source driver (gateway/drivers/mqtt/) against real mosquitto brokers."""
