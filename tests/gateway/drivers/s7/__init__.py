"""S7 driver (gateway/drivers/s7/) against snap7's server."""
