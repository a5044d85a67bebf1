"""``leptonctl cron install|remove|show``: crontab entries that run ``leptonctl maintain``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from leptonctl.cli.context import JsonOption, emit, settings
from leptonctl.core import crontab
from leptonctl.paths import data_home
from leptonctl.render.documents import cron_document
from leptonctl.services.maintain import cron as service
from leptonctl.services.maintain.run import default_lock_path

app = typer.Typer(
    help="Crontab entries that run `leptonctl maintain` (tick, nightly, scrub).",
    no_args_is_help=True,
)

NameOption = Annotated[
    str, typer.Option("--name", help="Which installation (several clusters, one crontab).")
]


@app.command("install")
def install(
    ctx: typer.Context,
    tick: Annotated[
        str, typer.Option(help="When health + dispatch run (cron expression, or off).")
    ] = crontab.SCHEDULES["tick"][0],
    nightly: Annotated[
        str, typer.Option(help="When the nightly playbook runs (or off).")
    ] = crontab.SCHEDULES["nightly"][0],
    scrub: Annotated[
        str, typer.Option(help="When the scrub playbook runs (or off).")
    ] = crontab.SCHEDULES["scrub"][0],
    log: Annotated[Path | None, typer.Option(help="Where runs append their JSON lines.")] = None,
    metrics_dir: Annotated[
        Path | None,
        typer.Option("--metrics-dir", help="node_exporter textfile directory for leptonctl.prom."),
    ] = None,
    name: NameOption = "default",
) -> None:
    """Install (or update) the entries; installing again changes them in place."""
    config = settings(ctx)
    config.inventory()  # a broken inventory fails now, not at 3 a.m.
    state = config.state_location()  # an absolute path, or a postgresql:// URL
    file = config.state_file()
    target = crontab.CronTarget(
        python=Path(sys.executable).absolute(),  # not resolved: a venv's python is a symlink
        inventory=config.inventory_path.absolute() if config.inventory_path else None,
        state=state,
        # PostgreSQL: the store's advisory lock, which every machine sharing it sees
        lock=default_lock_path(file) if file is not None else None,
        log=(log or (file.parent if file else data_home()) / "maintain.log").absolute(),
        metrics_dir=metrics_dir.absolute() if metrics_dir else None,
    )
    when = {
        "tick": crontab.check_when(tick, "--tick"),
        "nightly": crontab.check_when(nightly, "--nightly"),
        "scrub": crontab.check_when(scrub, "--scrub"),
    }
    entries = service.install(target, when, crontab.check_name(name))
    if entries:
        print(f"installed {len(entries)} crontab entr{'y' if len(entries) == 1 else 'ies'}:")
    _print(entries, "every schedule is off: no entry installed")


@app.command("remove")
def remove(
    name: NameOption = "default",
    every: Annotated[bool, typer.Option("--all", help="Every installation's entries.")] = False,
) -> None:
    """Remove our entries; every other line of the crontab stays as it is."""
    gone = service.remove(None if every else crontab.check_name(name))
    print(f"removed {len(gone)} entr{'y' if len(gone) == 1 else 'ies'}")


@app.command("show")
def show(
    name: Annotated[
        str | None, typer.Option("--name", help="Only this installation's entries.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The leptonctl entries in this user's crontab."""
    entries = service.show(name)
    emit(
        as_json,
        lambda: cron_document(entries),
        lambda: _print(entries, "no leptonctl entries in this crontab"),
    )


def _print(entries: Sequence[crontab.CronEntry], empty: str) -> None:
    if not entries:
        print(empty)
        return
    for entry in entries:
        print(entry.line)
