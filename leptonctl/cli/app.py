"""The ``leptonctl`` command: global options, sub-commands, and the one error handler.

``run(argv)`` is the whole program; it turns every ``LeptonError`` into a
message on stderr and an exit code (see ``ExitCode``) in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from leptonctl import __version__
from leptonctl.cli import copy, cron, data, execute, jobs, maintain, net, node, state, status
from leptonctl.cli.context import Settings
from leptonctl.errors import ExitCode, LeptonError

app = typer.Typer(
    name="leptonctl",
    help="A cluster manager for people who own machines: SSH and a terminal are all it needs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("status")(status.status)
app.command("exec", context_settings={"ignore_unknown_options": True})(execute.exec_command)
app.command("submit", context_settings={"ignore_unknown_options": True})(jobs.submit)
app.command("jobs")(jobs.jobs)
app.command("show")(jobs.show)
app.command("logs")(jobs.logs)
app.command("cancel")(jobs.cancel)
app.command("schedule")(jobs.schedule)
app.add_typer(node.app, name="node")
app.command("maintain")(maintain.maintain)
app.add_typer(cron.app, name="cron")
app.add_typer(data.app, name="data")
app.command("cp")(copy.cp)
app.add_typer(net.app, name="net")
app.add_typer(state.app, name="state")


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
