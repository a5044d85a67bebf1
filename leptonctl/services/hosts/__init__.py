"""Hosts: probing and status, the live view, exec, drain and resume."""
