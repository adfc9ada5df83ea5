"""asterfleet: build, ship and run a highly available Asterisk cluster."""

__version__ = "0.1.0"
