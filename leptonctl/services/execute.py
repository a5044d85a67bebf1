"""``leptonctl exec``: one shell command on many hosts, results per host."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence

from leptonctl.errors import HostError, UsageError
from leptonctl.inventory.model import Host
from leptonctl.remote.pool import HostPool
from leptonctl.remote.transport import Connection, RunResult, TransportOptions
from leptonctl.services.status import new_host_key_recorder
from leptonctl.store.interface import Store


def shell_command(argv: Sequence[str]) -> str:
    """One argument is a shell snippet as written; several are quoted word by word."""
    if not argv:
        raise UsageError("no command given", hint="leptonctl exec -- uptime")
    if len(argv) == 1:
        return argv[0]
    return shlex.join(argv)


async def run_everywhere(
    hosts: Sequence[Host],
    command: str,
    options: TransportOptions,
    store: Store,
    clock: Callable[[], float] = time.time,
) -> dict[str, RunResult | HostError]:
    """Run ``command`` on every host, stdin at end-of-file.  A command that outlives
    ``--timeout``, or an interrupted exec, has its whole process group killed there."""

    async def run(host: Host, conn: Connection) -> RunResult:
        return await conn.run(command, timeout=options.command_timeout, group=True)

    async with HostPool(options, new_host_key_recorder(store, clock)) as pool:
        return await pool.fan_out(hosts, run)
