"""The ``leptonctl`` command: global options, sub-commands, and the one error handler.

``run(argv)`` is the whole program; it turns every ``LeptonError`` into a
message on stderr and an exit code (see ``ExitCode``) in one place.

Commands are registered lazily: ``COMMANDS`` names each one, the module that defines it
and its one-line help, and a command's module is imported only when that command runs
(or its own ``--help`` is asked for).  ``leptonctl --version`` and ``--help`` import no
command at all, so they start about as fast as the interpreter (a test checks that the
table's help matches the commands' own).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from leptonctl import __version__
from leptonctl.errors import ExitCode, LeptonError


@dataclass(frozen=True)
class LazyCommand:
    """One sub-command: its name, where it is defined (a function, or a ``typer.Typer``
    for a group), and the one-line help ``leptonctl --help`` shows for it."""

    name: str
    module: str
    attr: str
    help: str
    group: bool = False
    context_settings: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """The click command, built from its module (imported now)."""
        target = getattr(importlib.import_module(self.module), self.attr)
        command: Any
        if self.group:
            command = typer.main.get_group(target)
        else:
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            single.command(self.name, context_settings=dict(self.context_settings))(target)
            command = typer.main.get_command(single)
        command.name = self.name
        return command


_OWN_OPTIONS = MappingProxyType({"ignore_unknown_options": True})  # the rest goes to the host

COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand(
        "status",
        "leptonctl.cli.status",
        "status",
        "Probe hosts and show their CPUs, memory, GPUs, FPGAs and disks.",
    ),
    LazyCommand(
        "exec",
        "leptonctl.cli.execute",
        "exec_command",
        "Run a command on the selected hosts in parallel: "
        "`leptonctl exec -l gpu -- nvidia-smi -L`.",
        context_settings=_OWN_OPTIONS,
    ),
    LazyCommand(
        "submit",
        "leptonctl.cli.jobs",
        "submit",
        "Queue a job (or a batch with --file) and start what fits.",
        context_settings=_OWN_OPTIONS,
    ),
    LazyCommand(
        "jobs",
        "leptonctl.cli.jobs",
        "jobs",
        "The queue (pending and running jobs); --all adds history.",
    ),
    LazyCommand(
        "show",
        "leptonctl.cli.jobs",
        "show",
        "Everything about one job: state, host, devices, why it is pending.",
    ),
    LazyCommand(
        "logs",
        "leptonctl.cli.jobs",
        "logs",
        "Print a job's output (stdout and stderr); -f follows it until the job ends.",
    ),
    LazyCommand(
        "cancel",
        "leptonctl.cli.jobs",
        "cancel",
        "Cancel jobs: pending ones leave the queue; running ones are killed as a whole tree.",
    ),
    LazyCommand(
        "schedule",
        "leptonctl.cli.jobs",
        "schedule",
        "Reconcile once (what cron calls): collect ended jobs, requeue lost ones, start what fits.",
    ),
    LazyCommand(
        "maintain",
        "leptonctl.cli.maintain",
        "maintain",
        "Run playbooks: probe, health, dispatch, gc, drain/resume, shell, scrub, repair.",
    ),
    LazyCommand(
        "cp",
        "leptonctl.cli.copy",
        "cp",
        "Copy over the fastest measured path (see `net probe`), resuming where a previous run "
        "stopped; every chunk is verified where it lands.",
    ),
    LazyCommand(
        "node",
        "leptonctl.cli.node",
        "app",
        "Drain, resume and list hosts (where new jobs may go).",
        group=True,
    ),
    LazyCommand(
        "cron",
        "leptonctl.cli.cron",
        "app",
        "Crontab entries that run `leptonctl maintain` (tick, nightly, scrub).",
        group=True,
    ),
    LazyCommand(
        "data",
        "leptonctl.cli.data",
        "app",
        "Datasets kept as checksummed chunks with K replicas on the cluster's own disks.",
        group=True,
    ),
    LazyCommand(
        "net",
        "leptonctl.cli.net",
        "app",
        "The network between hosts: measured links, and the routes copies take.",
        group=True,
    ),
    LazyCommand(
        "state",
        "leptonctl.cli.state",
        "app",
        "The state store: its schema (info, migrate) and moving it (copy, export, import).",
        group=True,
    ),
)


class _LazyCommands(MutableMapping[str, Any]):
    """Name -> click command, every name known up front, each command built on first
    lookup (click's suggestions for a mistyped name see every name)."""

    def __init__(self, table: tuple[LazyCommand, ...]) -> None:
        self._table = {entry.name: entry for entry in table}
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            entry = self._table[name]  # KeyError: no such command
            try:
                self._loaded[name] = entry.load()
            except KeyError as exc:  # a fault in the command's module, not a missing name
                raise RuntimeError(f"cannot load the command {name!r}: {exc!r}") from exc
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._table.pop(name, None)
        self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._table or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        yield from self._table
        yield from (n for n in self._loaded if n not in self._table)

    def __len__(self) -> int:
        return len(set(self._table) | set(self._loaded))


class LazyGroup(TyperGroup):
    """The top-level group: sub-commands from ``COMMANDS``, imported on first use; its
    own help is plain text from the table (no command module, no rich)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands(COMMANDS)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        placeholders = [TyperCommand(name=c.name, help=c.help) for c in COMMANDS]
        limit = formatter.width - 6 - max(len(c.name) for c in COMMANDS)
        rows = [(c.name, c.get_short_help_str(limit)) for c in placeholders if c.name]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="leptonctl",
    help="A cluster manager for people who own machines: SSH and a terminal are all it needs.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"leptonctl {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    inventory: Annotated[
        Path | None,
        typer.Option(
            "-i",
            "--inventory",
            envvar="LEPTONCTL_INVENTORY",
            help="Inventory file (Ansible YAML or INI). Default: this machine only.",
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            envvar="LEPTONCTL_STATE",
            help="State store: a SQLite file, or postgresql://user@host:port/db for a team. "
            "Default: state: in ~/.config/leptonctl/config.yaml, "
            "else $XDG_DATA_HOME/leptonctl/state.db.",
        ),
    ] = None,
    forks: Annotated[
        int,
        typer.Option(
            "-f", "--forks", envvar="LEPTONCTL_FORKS", min=1, help="Hosts in flight at once."
        ),
    ] = 64,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", min=0.1, help="Seconds to open one connection.")
    ] = 10.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds for one remote command.")
    ] = 60.0,
    accept_new_host_keys: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-keys",
            help="Record host keys of hosts not yet in known_hosts (never a changed key).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    from leptonctl.cli.context import Settings

    ctx.obj = Settings(
        inventory_path=inventory,
        state=state,
        forks=forks,
        connect_timeout=connect_timeout,
        command_timeout=timeout,
        accept_new_host_keys=accept_new_host_keys,
    )


def report_error(error: LeptonError) -> None:
    """The one place a ``LeptonError`` becomes words on stderr."""
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False)  # messages are printed as written
    console.print(Text.assemble(("error:", "bold red"), " ", error.message))
    if error.hint:
        console.print(Text(f"hint: {error.hint}", style="dim"))


def run(argv: list[str] | None = None) -> int:
    """Run leptonctl with ``argv``; return the exit code."""
    try:
        result = app(args=argv, prog_name="leptonctl", standalone_mode=False)
    except LeptonError as error:
        report_error(error)
        return int(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        return int(ExitCode.INTERRUPTED)
    except Exception as error:
        # Click's usage errors (Typer may vendor Click, so match on behaviour, not class).
        show, exit_code = getattr(error, "show", None), getattr(error, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            return exit_code
        raise
    return int(result or 0)


def main() -> None:
    sys.exit(run())
