"""Protocol gateway: polls devices and publishes their values to the UNS and the historian topics."""
