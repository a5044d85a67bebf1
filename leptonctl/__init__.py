"""leptonctl: a cluster manager for people who own machines, over SSH."""

__version__ = "0.1.0"
