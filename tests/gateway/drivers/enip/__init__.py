"""EtherNet/IP driver (gateway/drivers/enip/) against cpppo's Logix simulator."""
