"""``leptonctl node drain|resume|list``: where new jobs may go."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from leptonctl.cli.context import JsonOption, emit, in_context, print_table, with_context
from leptonctl.services.hosts import nodes as service
from leptonctl.services.jobs.reconcile import NODE_FAIL_AFTER

if TYPE_CHECKING:
    from leptonctl.core.reports import NodeRow
    from leptonctl.services.context import ServiceContext

app = typer.Typer(
    help="Drain, resume and list hosts (where new jobs may go).", no_args_is_help=True
)


@app.command("drain")
def drain(
    ctx: typer.Context,
    hosts: Annotated[str, typer.Argument(help="Hosts: names, groups, globs, like --limit.")],
    reason: Annotated[str, typer.Option(help="Why, shown by `node list`.")] = "drained by operator",
    wait: Annotated[bool, typer.Option("--wait", help="Wait until their jobs have ended.")] = False,
) -> None:
    """Schedule nothing new on these hosts; running jobs finish undisturbed."""

    async def work(c: ServiceContext) -> None:
        names = service.drain(c, hosts, reason)
        print(f"drained: {', '.join(names)}")
        if wait:
            await service.wait_until_idle(c, names, on_waiting=_say_waiting)
            print("no jobs left on them")

    in_context(ctx, work)


def _say_waiting(waiting: list[service.Waiting]) -> None:
    print(f"waiting for {len(waiting)} job(s) to end:", flush=True)
    for w in waiting:
        where = f"{w.host} unreachable ({w.unreachable}); as last seen" if w.unreachable else w.host
        print(f"  job {w.job_id} ({w.name}) on {where}: {w.state}", flush=True)
    if any(w.unreachable for w in waiting):
        print(
            f"  a job whose host stays unreachable for {NODE_FAIL_AFTER:g} s is given up on "
            "(NODE_FAIL, or requeued with --retries); then the wait ends",
            flush=True,
        )


@app.command("resume")
def resume(
    ctx: typer.Context,
    hosts: Annotated[str, typer.Argument(help="Hosts: names, groups, globs, like --limit.")],
) -> None:
    """Let the scheduler use these hosts again."""
    names = with_context(ctx, lambda c: service.resume(c, hosts))
    print(f"resumed: {', '.join(names)}")


@app.command("list")
def list_nodes(
    ctx: typer.Context,
    as_json: JsonOption = False,
) -> None:
    """Every inventory host: active or drained (and why), and its jobs."""
    rows = with_context(ctx, service.node_rows)
    emit(as_json, lambda: _nodes_document(rows), lambda: _print_nodes(rows))


def _nodes_document(rows: list[NodeRow]) -> object:
    from leptonctl.render.job_documents import nodes_document

    return nodes_document(rows)


def _print_nodes(rows: list[NodeRow]) -> None:
    from leptonctl.render.columns import plain_table
    from leptonctl.render.nodes import NODE_COLUMNS, node_lines, node_style, nodes_table

    now = time.time()
    print_table(
        lambda: nodes_table(rows, now),
        lambda styled: plain_table(
            NODE_COLUMNS, node_lines(rows, now), style=node_style if styled else None
        ),
    )
