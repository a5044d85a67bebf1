"""``leptonctl exec``: one shell command on many hosts, results per host."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from leptonctl.core.outputs import RunResult
from leptonctl.errors import HostError, UsageError
from leptonctl.inventory.model import Host
from leptonctl.remote.transport import Connection
from leptonctl.services.context import ServiceContext


def shell_command(argv: Sequence[str]) -> str:
    """One argument is a shell snippet as written; several are quoted word by word."""
    if not argv:
        raise UsageError("no command given", hint="leptonctl exec -- uptime")
    if len(argv) == 1:
        return argv[0]
    return shlex.join(argv)


async def run_everywhere(ctx: ServiceContext, command: str) -> dict[str, RunResult | HostError]:
    """Run ``command`` on every host with ``/bin/sh -c`` (as Ansible's ``shell`` module
    does, whatever the user's login shell), stdin at end-of-file.  A command that outlives
    ``--timeout``, or an interrupted exec, has its whole process group killed there."""

    async def run(host: Host, conn: Connection) -> RunResult:
        return await conn.run(command, timeout=ctx.options.command_timeout, group=True)

    return await ctx.sessions.pool.fan_out(ctx.selected, run)
