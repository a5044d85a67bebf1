"""Job commands: ``submit``, ``jobs``, ``show``, ``logs``, ``cancel``, ``schedule``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from leptonctl.cli.context import JsonOption, LimitOption, emit, in_context, print_table
from leptonctl.errors import ExitCode, UsageError
from leptonctl.services.jobs.reconcile import NODE_FAIL_AFTER

if TYPE_CHECKING:  # a reading command (`jobs`, `show`, `logs`) loads no job spec nor plan
    from leptonctl.core.jobspec import Submission
    from leptonctl.core.records import JobRecord
    from leptonctl.core.reports import DryRun
    from leptonctl.services.context import ServiceContext
    from leptonctl.services.jobs import queue
    from leptonctl.services.jobs.reconcile import ReconcileReport

MAX_INT = 2**63 - 1  # core.jobspec.MAX_INT (a test checks), without importing the job spec


def submit(
    ctx: typer.Context,
    command: Annotated[list[str] | None, typer.Argument(help="The command, after `--`.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A YAML batch of jobs.")] = None,
    cpus: Annotated[int, typer.Option(min=0, help="CPUs (threads).")] = 1,
    mem: Annotated[str | None, typer.Option(help="Memory, e.g. 16GiB.")] = None,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs.")] = 0,
    gpu_type: Annotated[
        str | None,
        typer.Option(help="GPU model substring (H100), or a MIG profile (1g.10gb): MIG devices."),
    ] = None,
    gpu_mem: Annotated[
        str | None, typer.Option(help="Minimum memory per GPU (a MIG device's own).")
    ] = None,
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
    as_json: JsonOption = False,
) -> None:
    """Queue a job (or a batch with --file) and start what fits.

    Example: `leptonctl submit --gpus 2 --gpu-type h100 -- python train.py`.
    A job no allowed host could ever run is rejected with the reason (exit 1) and kept in
    the history as FAILED.
    """
    from leptonctl.core.jobspec import (
        Submission,
        check_inputs,
        check_workdir,
        expand_array,
        make_request,
        parse_array,
        parse_duration,
        parse_env,
        parse_estimates,
    )
    from leptonctl.render.documents import dry_run_document, submitted_document
    from leptonctl.services.jobs import queue

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
    if dry_run:
        result = in_context(ctx, lambda c: _plan(c, jobs))
        emit(as_json, lambda: dry_run_document(result), lambda: _print_dry_run(result))
        return

    async def work(c: ServiceContext) -> int:
        submitted = await queue.submit(c, jobs)
        emit(
            as_json,
            lambda: submitted_document(submitted.ids, submitted.rejected),
            lambda: _print_submitted(submitted),
            indent=None,
        )
        for job_id, why in submitted.rejected.items():
            print(f"error: job {job_id} rejected: {why}", file=sys.stderr)
        if submitted.rejected:  # like sbatch for an impossible request: said, and a failed exit
            return int(ExitCode.FAILED)
        return await queue.wait_exit_code(c, submitted.ids) if wait else 0

    code = in_context(ctx, work)
    if code:
        raise typer.Exit(code)


async def _plan(c: ServiceContext, jobs: list[Submission]) -> DryRun:
    from leptonctl.services.jobs import queue

    return queue.plan(c, jobs)


def _batch(path: Path) -> list[Submission]:
    from leptonctl.core.jobspec import parse_batch_text
    from leptonctl.core.safeyaml import read_source  # PyYAML: only for a batch file

    return parse_batch_text(read_source(path, "batch file"), str(path))


def _print_submitted(submitted: queue.Submitted) -> None:
    for job_id in submitted.ids:
        if job_id not in submitted.rejected:
            print(f"job {job_id} {'started' if job_id in submitted.started else 'queued'}")


def _print_dry_run(result: DryRun) -> None:
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


def _warn_unreachable(report: ReconcileReport) -> None:
    """Unreachable hosts do not fail a reading command, but the reader should know."""
    from leptonctl.core.scan import printable

    for name, error in sorted(report.unreachable.items()):
        print(
            f"warning: {name}: {printable(error.message)} ({error.kind}); "
            "its jobs are as last seen",
            file=sys.stderr,
        )
        if error.hint:
            print(f"  hint: {printable(error.hint)}", file=sys.stderr)


def jobs(
    ctx: typer.Context,
    all_jobs: Annotated[bool, typer.Option("--all", help="Include finished jobs.")] = False,
    state: Annotated[str | None, typer.Option(help="Only this state, e.g. RUNNING.")] = None,
    host: Annotated[str | None, typer.Option(help="Only jobs on this host.")] = None,
    name: Annotated[str | None, typer.Option(help="Only jobs whose name contains this.")] = None,
    watch: Annotated[
        bool, typer.Option("-w", "--watch", help="Live queue (q or Ctrl-C quits).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.5, help="Seconds between refreshes (--watch).")
    ] = 2.0,
    user: Annotated[str | None, typer.Option(help="Only jobs this user submitted.")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only the jobs I submitted.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The queue (pending and running jobs); --all adds history.

    With --watch, the queue live: elapsed and remaining walltime, devices, pending
    reasons, and the jobs that ended in the last minutes (--json: one document per refresh).
    """
    if watch:
        if all_jobs or state or host or name or user or mine:
            raise UsageError("--watch shows the whole queue; filters are for a one-shot listing")
        _watch_jobs(ctx, interval, as_json)
        return
    if mine and user is not None:
        raise UsageError("--mine and --user name two different filters: give one")
    from leptonctl.services.jobs import queue

    report, records = in_context(
        ctx,
        lambda c: queue.job_list(
            c, all_jobs=all_jobs, state=state, host=host, name=name, user=user, mine=mine
        ),
    )
    _warn_unreachable(report)
    emit(
        as_json,
        lambda: _documents().jobs_document(records),
        lambda: _print_jobs(records),
    )


def _watch_jobs(ctx: typer.Context, interval: float, as_json: bool) -> None:
    from leptonctl.cli.context import emit_document
    from leptonctl.cli.live import show_live
    from leptonctl.render.dashboard_documents import queue_document
    from leptonctl.render.queue_dashboard import queue_view
    from leptonctl.services.hosts.watch import watch_queue

    async def loop(c: ServiceContext) -> None:
        frames = watch_queue(c, interval)
        if as_json:  # one document per refresh
            async for frame in frames:
                emit_document(queue_document(frame), indent=None)
            return
        await show_live(frames, lambda f, w, h: queue_view(f, w, h, interval=interval))

    try:
        in_context(ctx, loop)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def show(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    as_json: JsonOption = False,
) -> None:
    """Everything about one job: state, host, devices, why it is pending."""
    from leptonctl.services.jobs import queue

    report, record = in_context(ctx, lambda c: queue.job_detail(c, job_id))
    _warn_unreachable(report)
    emit(
        as_json,
        lambda: _documents().job_document(record),
        lambda: _print_job(record),
    )


def logs(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Stream until the job ends.")
    ] = False,
) -> None:
    """Print a job's output (stdout and stderr); -f follows it until the job ends."""

    def write(data: str) -> None:
        sys.stdout.write(data)
        sys.stdout.flush()

    from leptonctl.services.jobs import operations as job_service

    in_context(ctx, lambda c: job_service.job_log(c, job_id, follow, write))


def cancel(
    ctx: typer.Context,
    job_ids: Annotated[list[int], typer.Argument(help="Job ids.")],
    any_user: Annotated[
        bool, typer.Option("--any-user", help="Also cancel jobs other users submitted.")
    ] = False,
) -> None:
    """Cancel jobs: pending ones leave the queue; running ones are killed as a whole tree.
    Another user's job needs --any-user."""
    from leptonctl.core.records import ACTIVE
    from leptonctl.services.jobs import queue

    results = in_context(ctx, lambda c: queue.cancel(c, job_ids, any_user))
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
    from leptonctl.services.jobs import operations as job_service

    def show(report: ReconcileReport) -> None:
        lost = sorted(report.unreachable) or "-"
        print(
            f"{time.strftime('%H:%M:%S')} started {report.started or '-'} "
            f"finished {report.finished or '-'} requeued {report.requeued or '-'} "
            f"unreachable {lost}",
            flush=True,
        )

    report = in_context(
        ctx, lambda c: job_service.reconcile_loop(c, watch, interval, show, node_fail_after)
    )
    raise typer.Exit(int(ExitCode.HOSTS_UNREACHABLE) if report.unreachable else 0)


def _documents() -> Any:
    """The JSON documents of the reading commands (imported only under --json)."""
    from leptonctl.render import job_documents

    return job_documents


def _print_jobs(records: list[JobRecord]) -> None:
    from leptonctl.render import jobs as view
    from leptonctl.render.columns import plain_table

    now = time.time()
    print_table(
        lambda: view.jobs_table(records, now),
        lambda styled: plain_table(
            view.JOB_COLUMNS, view.job_rows(records, now), style=view.job_style if styled else None
        ),
    )


def _print_job(record: JobRecord) -> None:
    from leptonctl.render import jobs as view
    from leptonctl.render.columns import plain_table

    now = time.time()
    print_table(
        lambda: view.job_panel(record, now),
        lambda styled: plain_table(
            None, view.panel_rows(record, now), gap=2, style=view.panel_style if styled else None
        ),
    )
