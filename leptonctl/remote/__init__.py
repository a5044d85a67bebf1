"""The one transport: asyncssh (and local subprocesses), fan-out, and the agent client."""
