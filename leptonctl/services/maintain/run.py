"""``leptonctl maintain``: run playbooks under a lock, record the run, write metrics.

One run at a time per state store: the run lock is the store's lock ``maintain``
(a ``flock`` next to a SQLite file, an advisory lock in PostgreSQL, so a cron host
and a laptop sharing one store never overlap), or the file ``--lock`` names, taken
without waiting, so a cron tick that fires while the last run
is still going records a skip and exits ``ExitCode.SKIPPED`` instead of piling
up.  ``--check`` takes no lock, contacts no host and changes nothing but its own
run record.  Every run is recorded (start, end, steps, outcome); the exit code
says healthy (0), hosts down or unhealthy (3), or the run failed (1).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path

from leptonctl.core.facts import WireError, parse_facts
from leptonctl.core.metrics import (
    METRICS_FILE,
    HostSample,
    MetricsSnapshot,
    RunSample,
    render_metrics,
)
from leptonctl.core.playbook import PlannedStep, Playbook, about, parse_playbook, plan_run
from leptonctl.core.reports import RunReport
from leptonctl.core.safeyaml import read_source
from leptonctl.errors import ExitCode, LeptonError, StateError, UsageError
from leptonctl.services.context import ServiceContext
from leptonctl.services.maintain import data_actions as maintain_data
from leptonctl.services.maintain.actions import (
    run_dispatch,
    run_drain,
    run_gc_jobs,
    run_health,
    run_probe,
    run_resume,
    run_shell,
)
from leptonctl.services.maintain.context import RunContext, StepResult
from leptonctl.store.interface import Store
from leptonctl.store.jobs import ACTIVE, FINAL
from leptonctl.store.locks import file_lock

TICK_PLAYBOOKS = ("health", "dispatch")  # what `maintain` runs when given no playbook

Action = Callable[[RunContext, PlannedStep], Awaitable[StepResult]]


async def run_gc(ctx: RunContext, planned: PlannedStep) -> StepResult:
    result = await run_gc_jobs(ctx, planned)
    if planned.step.args["chunks"]:
        try:
            chunks = await maintain_data.run_gc_chunks(ctx, planned)
        except LeptonError as exc:
            result.error = exc.message
        else:
            result.details["chunks"] = chunks.to_json()
            result.summary += f"; chunks: {chunks.summary}"
    return result


ACTIONS: Mapping[str, Action] = {
    "probe": run_probe,
    "health": run_health,
    "dispatch": run_dispatch,
    "gc": run_gc,
    "drain": run_drain,
    "resume": run_resume,
    "shell": run_shell,
    "scrub": maintain_data.run_scrub,
    "repair": maintain_data.run_repair,
    "rebalance": maintain_data.run_rebalance,
}


# -- playbooks -------------------------------------------------------------------------


def shipped_playbooks() -> dict[str, Path]:
    """Name -> file of the playbooks shipped with leptonctl (wheel, or checkout)."""
    package = resources.files("leptonctl")
    packaged = package / "_playbooks"
    base = Path(str(packaged)) if packaged.is_dir() else Path(str(package)).parent / "playbooks"
    return {p.stem: p for p in sorted(base.glob("*.yaml"))}


def playbook_list() -> list[tuple[str, str, str]]:
    """(name, file, one-line description) of every shipped playbook."""
    rows = []
    for name, path in shipped_playbooks().items():
        rows.append((name, str(path), about(path.read_text(encoding="utf-8"))))
    return rows


def load_playbooks(refs: Sequence[str]) -> list[Playbook]:
    """Playbooks from files, directories (every *.yaml in them) or shipped names."""
    shipped = shipped_playbooks()
    files: list[Path] = []
    for ref in refs or TICK_PLAYBOOKS:
        path = Path(ref).expanduser()
        if path.is_dir():
            files += sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        elif path.is_file():
            files.append(path)
        elif ref in shipped:
            files.append(shipped[ref])
        else:
            raise UsageError(
                f"no playbook {ref!r}: not a file, and not a shipped playbook",
                hint=f"shipped: {', '.join(shipped)}; or give a path to a YAML file",
            )
    books = []
    for path in files:
        books.append(parse_playbook(read_source(path, "playbook"), str(path)))
    return books


# -- the run lock ----------------------------------------------------------------------


HOLDER_KEY = "maintain.holder"  # who holds the run lock: {"pid", "by", "since"} or ""


def default_lock_path(state_path: Path) -> Path:
    """The file the SQLite store's ``maintain`` lock uses (``--lock``'s old default)."""
    return state_path.with_name(state_path.name + ".maintain.lock")


@contextmanager
def run_lock(store: Store, now: float, path: Path | None = None) -> Iterator[str | None]:
    """Hold the run lock (the store's ``maintain`` lock, or the file ``path``): yields None
    while held, or (not waiting) who holds it.  The holder is noted in the store."""
    lock = store.lock("maintain", wait=False) if path is None else file_lock(path, wait=False)
    with lock as held:
        if not held:
            yield _holder(store.value(HOLDER_KEY))
            return
        info = {"pid": os.getpid(), "by": str(store.actor), "since": now}
        store.set_value(HOLDER_KEY, json.dumps(info))
        try:
            yield None
        finally:
            with suppress(StateError):  # the lock goes anyway; a stale note names an old holder
                store.set_value(HOLDER_KEY, "")


def _holder(text: str | None) -> str:
    try:
        info = json.loads(text or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"since {since} (pid {info['pid']}) by {info['by']}"
    except (ValueError, KeyError, TypeError):
        return "since a moment ago"  # it has not written its details yet


# -- the run ---------------------------------------------------------------------------


async def maintain(
    service: ServiceContext,
    playbooks: Sequence[Playbook],
    *,
    lock_path: Path | None = None,
    check: bool = False,
    limit: str | None = None,
    metrics_dir: Path | None = None,
    on_step: Callable[[StepResult], None] = lambda _: None,
) -> RunReport:
    """Plan every playbook (a bad selector fails here, before anything runs), then run."""
    inventory, options, store, clock = (
        service.inventory,
        service.options,
        service.store,
        service.clock,
    )
    planned = plan_run(playbooks, inventory, limit)
    names = tuple(p.name for p in playbooks)
    ctx = RunContext(inventory, options, store, check, clock, store.load_facts())
    if check:
        return await _run(ctx, planned, names, None, on_step)
    with run_lock(store, clock(), lock_path) as holder:
        if holder is not None:
            now = clock()
            lock = f"the lock {lock_path}" if lock_path else f"the run lock of {store.where}"
            why = f"another run holds {lock} {holder}"
            run_id = store.maintenance.record_skip(names, now, why, int(ExitCode.SKIPPED))
            code = int(ExitCode.SKIPPED)
            report = RunReport(run_id, names, False, now, now, [], "skipped", code)
            report.skipped_because = why
            return report
        store.maintenance.abandon_unfinished(clock())
        async with ctx:  # its connections and agent sessions close with the run
            return await _run(ctx, planned, names, metrics_dir, on_step)


async def _run(
    ctx: RunContext,
    planned: Sequence[PlannedStep],
    names: tuple[str, ...],
    metrics_dir: Path | None,
    on_step: Callable[[StepResult], None],
) -> RunReport:
    store, clock = ctx.store, ctx.clock
    started = clock()
    run_id = store.maintenance.start(names, ctx.check, started)
    results: list[StepResult] = []
    stopped: set[str] = set()  # playbooks (by source) halted by a failed `on_error: stop` step
    try:
        for step in planned:
            if step.source in stopped:
                result = StepResult(step, "skipped", "an earlier step failed (on_error: stop)")
            elif not step.hosts:
                result = StepResult(step, "skipped", "no hosts selected")
            else:
                result = await _run_step(ctx, step)
            results.append(result)
            if result.status == "failed" and step.step.on_error == "stop":
                stopped.add(step.source)
            store.maintenance.set_steps(run_id, [r.to_json() for r in results])
            on_step(result)
        report = judge(run_id, names, ctx.check, started, clock(), results)
        if metrics_dir is not None and not ctx.check:
            try:
                text = render_metrics(snapshot(ctx, report))
                report.metrics_file = write_metrics(metrics_dir, text)
            except LeptonError as exc:
                report.outcome, report.exit_code = "failed", int(ExitCode.FAILED)
                report.error = exc.message
        report.ended = clock()
    except BaseException as exc:  # recorded as it ended, then passed on
        interrupted = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
        outcome, code = ("interrupted", ExitCode.INTERRUPTED) if interrupted else ("failed", 1)
        steps = [r.to_json() for r in results]
        store.maintenance.finish(run_id, clock(), outcome, int(code), steps)
        raise
    store.maintenance.finish(
        run_id, report.ended, report.outcome, report.exit_code, [r.to_json() for r in results]
    )
    return report


async def _run_step(ctx: RunContext, planned: PlannedStep) -> StepResult:
    started = ctx.clock()
    try:
        result = await ACTIONS[planned.action](ctx, planned)
    except LeptonError as exc:
        result = StepResult(planned, error=exc.message)
        if exc.hint:
            result.details["hint"] = exc.hint
    except Exception as exc:  # a bug in one step must not take the whole tick down silently
        result = StepResult(planned, error=f"internal error: {type(exc).__name__}: {exc}")
        result.details["traceback"] = traceback.format_exc().splitlines()[-6:]
    result.started, result.ended = started, ctx.clock()
    if result.error and not result.summary:
        result.summary = result.error
    return result.settle()


def judge(
    run_id: int | None,
    names: tuple[str, ...],
    check: bool,
    started: float,
    ended: float,
    results: list[StepResult],
) -> RunReport:
    """The run's outcome and exit code: a step failed (1), else hosts down or unhealthy (3),
    else ok (0).  A check run is 1 or 0."""
    problems: dict[str, list[str]] = {}
    for result in results:
        for host, why in result.problems().items():
            if why not in problems.setdefault(host, []):
                problems[host].append(why)
    if any(r.status == "failed" for r in results):
        outcome, code = "failed", ExitCode.FAILED
    elif check:  # judged from stored facts only: host problems do not set the exit code
        outcome, code = "check", ExitCode.OK
    elif problems:
        outcome, code = "unhealthy", ExitCode.HOSTS_UNREACHABLE
    else:
        outcome, code = "ok", ExitCode.OK
    return RunReport(run_id, names, check, started, ended, results, outcome, int(code), problems)


# -- metrics ---------------------------------------------------------------------------


def snapshot(ctx: RunContext, report: RunReport) -> MetricsSnapshot:
    """What the run saw, for ``leptonctl.prom``."""
    now = ctx.clock()
    store = ctx.store
    healthy: dict[str, bool] = {}
    for result in report.steps:
        if result.planned.action == "health":
            for name, outcome in result.hosts.items():
                if outcome.status in ("ok", "unhealthy"):
                    healthy[name] = outcome.status == "ok"
    stored = store.load_facts()
    drained = store.drained()
    hosts = []
    for host in ctx.inventory.hosts:
        record = stored.get(host.name)
        try:
            facts = parse_facts(record.document) if record else None
        except WireError:
            facts = None
        hosts.append(
            HostSample(
                host=host.name,
                up=ctx.reached.get(host.name),
                healthy=healthy.get(host.name),
                drained=host.name in drained,
                facts=facts,
                facts_age_s=now - record.probed_at if record else None,
            )
        )
    jobs = dict.fromkeys((*ACTIVE, *FINAL), 0)
    jobs.update(store.maintenance.job_counts())
    try:
        replicas = maintain_data.replica_health(store)
    except StateError:
        replicas = None
    run = RunSample(report.started, now - report.started, report.exit_code)
    return MetricsSnapshot(hosts, jobs, replicas, run)


def write_metrics(directory: Path, text: str) -> Path:
    """Write ``leptonctl.prom`` atomically (a reader never sees half a file)."""
    target = directory / METRICS_FILE
    tmp: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{METRICS_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # node_exporter usually runs as another user
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise LeptonError(
            f"cannot write metrics to {target}: {exc}",
            hint="point --metrics-dir at node_exporter's --collector.textfile.directory",
        ) from exc
    return target
