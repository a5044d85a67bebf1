"""Orchestration: one async function per operation, called once per command by the CLI."""
