"""Job commands: ``submit``, ``jobs``, ``show``, ``logs``, ``cancel``, ``schedule``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from leptonctl.cli.context import Settings, run_async, settings
from leptonctl.cli.status import LimitOption
from leptonctl.core.jobspec import (
    MAX_INT,
    Submission,
    check_after,
    check_inputs,
    check_workdir,
    expand_array,
    make_request,
    parse_array,
    parse_batch_text,
    parse_duration,
    parse_env,
    parse_estimates,
)
from leptonctl.core.reports import DryRun
from leptonctl.core.safeyaml import read_source
from leptonctl.errors import ExitCode, UsageError
from leptonctl.inventory import Inventory
from leptonctl.render.documents import dry_run_document, job_document, jobs_document
from leptonctl.services import jobs as service
from leptonctl.services.reconcile import NODE_FAIL_AFTER, ReconcileReport, reconcile
from leptonctl.store.jobs import ACTIVE
from leptonctl.store.sqlite import SqliteStore

# How a finished job maps to `submit --wait`'s exit status (documented in the README).
WAIT_EXIT = {"COMPLETED": 0, "TIMEOUT": 124, "CANCELLED": 130, "NODE_FAIL": 3}


def submit(
    ctx: typer.Context,
    command: Annotated[list[str] | None, typer.Argument(help="The command, after `--`.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A YAML batch of jobs.")] = None,
    cpus: Annotated[int, typer.Option(min=0, help="CPUs (threads).")] = 1,
    mem: Annotated[str | None, typer.Option(help="Memory, e.g. 16GiB.")] = None,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs.")] = 0,
    gpu_type: Annotated[str | None, typer.Option(help="GPU model substring, e.g. H100.")] = None,
    gpu_mem: Annotated[str | None, typer.Option(help="Minimum memory per GPU.")] = None,
    fpgas: Annotated[int, typer.Option(min=0, help="FPGA cards.")] = 0,
    fpga_type: Annotated[str | None, typer.Option(help="FPGA card name substring.")] = None,
    name: Annotated[str | None, typer.Option(help="Job name.")] = None,
    priority: Annotated[
        int, typer.Option(min=-MAX_INT - 1, max=MAX_INT, help="Higher runs first.")
    ] = 0,
    walltime: Annotated[
        str | None, typer.Option("--time", help="Walltime: 90s, 15m, 2h, H:MM:SS.")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE (repeatable).")] = None,
    workdir: Annotated[str | None, typer.Option(help="Working directory on the host.")] = None,
    retries: Annotated[
        int, typer.Option(min=0, max=MAX_INT, help="Requeues after failure or node loss.")
    ] = 0,
    after: Annotated[
        str | None, typer.Option(help="Start after these jobs COMPLETED: ID[,ID].")
    ] = None,
    array: Annotated[
        str | None, typer.Option(help="One job per index: 0-99, 1,3,5, 0-10:2.")
    ] = None,
    limit: LimitOption = None,
    est: Annotated[
        list[str] | None, typer.Option("--est", help="KIND=SECONDS estimate (repeatable).")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input", help="Dataset on the job's host first: NAME[@V][:/mount] (repeatable)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; touch nothing.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the job; exit with its code.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Queue a job (or a batch with --file) and start what fits.

    Example: `leptonctl submit --gpus 2 --gpu-type h100 -- python train.py`.
    A job no allowed host could ever run is rejected with the reason (exit 1) and kept in
    the history as FAILED.
    """
    config = settings(ctx)
    inventory = config.inventory()
    if file is not None:
        if command:
            raise UsageError("give either --file or a command, not both")
        jobs = _batch(file)
    else:
        if not command:
            raise UsageError(
                "no command given", hint="leptonctl submit --gpus 1 -- python train.py"
            )
        job = Submission(
            name=name or Path(command[0]).name,
            command=command[0] if len(command) == 1 else tuple(command),
            request=make_request(cpus, mem, gpus, gpu_type, gpu_mem, fpgas, fpga_type),
            priority=priority,
            walltime=parse_duration(walltime) if walltime else None,
            env=parse_env(env or []),
            workdir=check_workdir(workdir),
            retries=retries,
            after=tuple(a.strip() for a in after.split(",") if a.strip()) if after else (),
            limit=limit,
            estimates=parse_estimates(est or []),
            inputs=check_inputs(inputs or ()),
        )
        jobs = expand_array(job, parse_array(array)) if array else [job]
    with config.store() as store:
        check_after(jobs, lambda job_id: store.jobs.get(job_id) is not None)  # dry run too
        if dry_run:
            result = service.dry_run(store, inventory, jobs, time.time())
            _print_dry_run(result, as_json)
            return
        ids = service.enqueue(store, inventory, jobs, time.time())
        report = run_async(reconcile(inventory, config.transport(), store))
        rejected = service.rejected(store, ids)
        if as_json:
            document: dict[str, object] = {"id": ids[0]}
            if len(ids) > 1:
                document["ids"] = ids
            if rejected:
                document["rejected"] = [{"id": i, "reason": why} for i, why in rejected.items()]
            print(json.dumps(document))
        else:
            started = set(report.started)
            for job_id in ids:
                if job_id not in rejected:
                    print(f"job {job_id} {'started' if job_id in started else 'queued'}")
        for job_id, why in rejected.items():
            print(f"error: job {job_id} rejected: {why}", file=sys.stderr)
        if rejected:  # like sbatch for an impossible request: said, and a failed exit
            raise typer.Exit(int(ExitCode.FAILED))
        if wait:
            raise typer.Exit(_wait(config, inventory, store, ids))


def _batch(path: Path) -> list[Submission]:
    return parse_batch_text(read_source(path, "batch file"), str(path))


def _wait(config: Settings, inventory: Inventory, store: SqliteStore, ids: list[int]) -> int:
    records = run_async(service.wait_for(inventory, config.transport(), store, ids))
    worst = 0
    for record in records:
        code = WAIT_EXIT.get(record.state, record.exit_code if record.exit_code else 1)
        worst = worst or code
    return worst


def _print_dry_run(result: DryRun, as_json: bool) -> None:
    document = dry_run_document(result)
    if as_json:
        print(json.dumps(document, indent=2))
        return
    from rich.console import Console
    from rich.text import Text

    from leptonctl.render.jobs import plan_table

    console = Console()
    console.print(plan_table(result))
    console.print(f"predicted makespan: {result.plan.makespan:.0f} s")
    for host in result.unknown_hosts:
        console.print(
            Text(f"{host}: no declared capacity and never probed; not planned on", "yellow")
        )


@contextmanager
def _reconciled(config: Settings) -> Iterator[SqliteStore]:
    """The state store, after one reconcile pass: what every reading command starts with.
    It never stages a job's inputs, nor waits for a transfer another process runs."""
    with config.store() as store:
        report = run_async(reconcile(config.inventory(), config.transport(), store, stage=False))
        _warn_unreachable(report)
        yield store


def _warn_unreachable(report: ReconcileReport) -> None:
    """Unreachable hosts do not fail a reading command, but the reader should know."""
    for name, error in sorted(report.unreachable.items()):
        print(
            f"warning: {name} unreachable ({error.kind}); its jobs are as last seen",
            file=sys.stderr,
        )


def jobs(
    ctx: typer.Context,
    all_jobs: Annotated[bool, typer.Option("--all", help="Include finished jobs.")] = False,
    state: Annotated[str | None, typer.Option(help="Only this state, e.g. RUNNING.")] = None,
    host: Annotated[str | None, typer.Option(help="Only jobs on this host.")] = None,
    name: Annotated[str | None, typer.Option(help="Only jobs whose name contains this.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The queue (pending and running jobs); --all adds history."""
    with _reconciled(settings(ctx)) as store:
        records = store.jobs.all() if all_jobs or state else store.jobs.in_states(ACTIVE)
    records = [
        r
        for r in records
        if (state is None or r.state == state.upper())
        and (host is None or r.host == host)
        and (name is None or name in r.name)
    ]
    if as_json:
        print(json.dumps(jobs_document(records), indent=2))
        return
    from rich.console import Console

    from leptonctl.render.jobs import jobs_table

    Console().print(jobs_table(records, time.time()))


def show(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Everything about one job: state, host, devices, why it is pending."""
    with _reconciled(settings(ctx)) as store:
        record = store.jobs.get(job_id)
    if record is None:
        raise UsageError(f"no job {job_id}")
    if as_json:
        print(json.dumps(job_document(record), indent=2))
        return
    from rich.console import Console

    from leptonctl.render.jobs import job_panel

    Console().print(job_panel(record, time.time()))


def logs(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Stream until the job ends.")
    ] = False,
) -> None:
    """Print a job's output (stdout and stderr); -f follows it until the job ends."""
    config = settings(ctx)
    inventory = config.inventory()

    def write(data: str) -> None:
        sys.stdout.write(data)
        sys.stdout.flush()

    with config.store() as store:
        run_async(service.job_log(inventory, config.transport(), store, job_id, follow, write))


def cancel(
    ctx: typer.Context,
    job_ids: Annotated[list[int], typer.Argument(help="Job ids.")],
) -> None:
    """Cancel jobs: pending ones leave the queue; running ones are killed as a whole tree."""
    config = settings(ctx)
    inventory = config.inventory()
    with config.store() as store:
        results = run_async(service.cancel(inventory, config.transport(), store, job_ids))
        run_async(reconcile(inventory, config.transport(), store, stage=False))
    for job_id, state in results.items():
        print(f"job {job_id}: {'cancel requested' if state in ACTIVE else state}")


def schedule(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option("-w", "--watch", help="Keep reconciling.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between passes.")] = 5.0,
    node_fail_after: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds a host may be unreachable before its jobs fail."),
    ] = NODE_FAIL_AFTER,
) -> None:
    """Reconcile once (what cron calls): collect ended jobs, requeue lost ones, start what fits."""
    config = settings(ctx)
    inventory = config.inventory()
    with config.store() as store:

        def show(report: ReconcileReport) -> None:
            lost = sorted(report.unreachable) or "-"
            print(
                f"{time.strftime('%H:%M:%S')} started {report.started or '-'} "
                f"finished {report.finished or '-'} requeued {report.requeued or '-'} "
                f"unreachable {lost}",
                flush=True,
            )

        report = run_async(
            service.reconcile_loop(
                inventory, config.transport(), store, watch, interval, show, node_fail_after
            )
        )
    raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE) if report.unreachable else 0)
