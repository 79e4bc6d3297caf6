"""Tests of the protocol drivers, one folder per protocol as in gateway/drivers/."""
