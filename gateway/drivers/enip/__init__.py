"""EtherNet/IP CIP for Logix controllers: config (no protocol library), driver, helpers, simulator."""
