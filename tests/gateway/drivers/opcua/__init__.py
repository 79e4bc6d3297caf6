"""OPC UA driver (gateway/drivers/opcua/) against asyncua server processes."""
