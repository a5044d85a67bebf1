"""``leptonctl net show``: the measured network, and the route a copy would take."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from leptonctl.cli.context import (
    JsonOption,
    LimitOption,
    emit,
    in_context,
    settings,
    with_context,
)
from leptonctl.core.netgraph import DEFAULT_MAX_AGE_S, Route
from leptonctl.core.reports import ProbeReport
from leptonctl.errors import ExitCode, UsageError
from leptonctl.render.documents import net_document, probe_document, route_document
from leptonctl.services.context import ServiceContext
from leptonctl.services.net import graph as service
from leptonctl.services.net.probe import probe_links

app = typer.Typer(
    help="The network between hosts: measured links, and the routes copies take.",
    no_args_is_help=True,
)


@app.command("show")
def show(
    ctx: typer.Context,
    limit: LimitOption = None,
    as_json: JsonOption = False,
    route: Annotated[
        tuple[str, str] | None,
        typer.Option("--route", metavar="SRC DST", help="Explain the best route from SRC to DST."),
    ] = None,
    max_age: Annotated[
        float,
        typer.Option(
            "--max-age", min=0.0, help="Ignore measurements older than this many seconds."
        ),
    ] = DEFAULT_MAX_AGE_S,
) -> None:
    """The link matrix (bandwidth and rtt per directed pair), or one route explained."""
    config = settings(ctx)
    inventory, hosts = config.hosts(limit)
    names = [h.name for h in hosts]
    if route is not None:
        if route[0] == route[1]:
            raise UsageError(f"--route needs two different hosts, got {route[0]} twice")
        for name in route:
            inventory.host(name)  # an unknown name: LimitError with close matches
            if name not in names:
                raise UsageError(f"{name} is not among the hosts selected by --limit {limit}")
    now = time.time()
    graph = with_context(ctx, lambda c: service.load_graph(c.store, hosts, now, max_age))
    if route is not None:
        chosen = service.require_route(graph, *route)
        emit(as_json, lambda: route_document(chosen), lambda: _print_route(chosen, graph))
        return
    emit(
        as_json,
        lambda: net_document(graph, names, now),
        lambda: _print_links(graph, names, now),
    )


def _print_route(chosen: Route, graph: object) -> None:
    from rich.console import Console

    from leptonctl.render.net import route_table

    Console().print(route_table(chosen, graph))


def _print_links(graph: object, names: list[str], now: float) -> None:
    from rich.console import Console

    console = Console()
    console.print(_links_view(graph, names, now, console.width))


@app.command("probe")
def probe(
    ctx: typer.Context,
    limit: LimitOption = None,
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.05, max=30.0, help="Measuring time per pair.")
    ] = 1.0,
    budget: Annotated[
        float | None,
        typer.Option("--budget", min=1.0, help="Stop starting new pairs after this many seconds."),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option("--sample", min=1, help="Measure only N peers per host (large fleets)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Measure bandwidth and round-trip time of every ordered pair of hosts, over the channel
    copies use (pairs sharing no host run at once); results go to the state store."""

    async def work(c: ServiceContext) -> tuple[ProbeReport, object, list[str]]:
        report = await probe_links(c, seconds=seconds, budget=budget, sample=sample)
        return (
            report,
            service.load_graph(c.store, c.selected, time.time()),
            [h.name for h in c.selected],
        )

    report, graph, names = in_context(ctx, work, limit)
    emit(as_json, lambda: probe_document(report), lambda: _print_probe(report, graph, names))
    if report.unreachable_hosts:
        raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE))


def _print_probe(report: ProbeReport, graph: object, names: list[str]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console()
    console.print(_links_view(graph, names, time.time(), console.width))
    console.print(
        f"measured {len(report.measured)} pair(s) in {report.seconds:.1f} s"
        + (f"; {report.skipped_pairs} left for later (--budget)" if report.skipped_pairs else "")
    )
    for name, why in sorted(report.unreachable_hosts.items()):
        console.print(Text(f"{name}: not reachable from here ({why})", style="yellow"))


def _links_view(graph: object, names: list[str], now: float, width: int) -> object:
    """The matrix when the terminal is wide enough for it, else the list of links."""
    from leptonctl.render.net import link_list_table, link_matrix_table, matrix_width

    if matrix_width(names) <= width:
        return link_matrix_table(graph, names, now)
    return link_list_table(graph, names, now)
