"""Benchmark: what the live dashboard costs a host's agent and the operator.

Run from the repository root (no root, no lab needed):

    python benchmarks/dashboard_cost.py --refreshes 30 --hosts 64

1. The agent.  A real ``agent serve`` process (this checkout's agent, this machine's
   /proc) is sent what a dashboard sends a host: a ``sample`` every ``--interval``
   seconds (2 s), paced in real time for ``--refreshes`` refreshes, after the one
   ``probe`` a dashboard starts with.  Its CPU time (utime + stime from /proc/PID/stat)
   over that span, divided by the span, is the share of one core the dashboard costs the
   host.  The same is measured with a full ``probe`` at each refresh (what the dashboard
   sent before the ``sample`` op), and both per request, back to back, for the
   steady-state cost without the pacing.
2. The operator.  ``--hosts`` fake hosts (``FakeCluster``: half with the synthetic 8x
   H100 probe, half CPU-only) answer over in-process agent sessions; one refresh is
   what ``status --watch`` does: ``LiveCluster.refresh`` (a sample per host), the
   store reads (jobs, drains, data health), ``cluster_frame`` and rendering the screen at
   120 columns.  The fake hosts' answers run in the operator's process too, so their CPU
   time (measured around each answer) is subtracted from the refresh; both are printed.

Nothing here is a test; nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICKS = os.sysconf("SC_CLK_TCK")


# -- the agent -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Serve:
    """A real ``agent serve`` process and its request/reply lines."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "agent"), "serve", "--data-dir", str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def agent_paced(op: str, refreshes: int, interval: float, gpus: bool) -> float:
    """% of one core the agent spends answering ``op`` every ``interval`` s."""
    with tempfile.TemporaryDirectory() as tmp:
        serve = Serve(Path(tmp))
        request: dict[str, Any] = {"op": op, "gpus": gpus} if op == "sample" else {"op": op}
        serve.ask({"op": "probe"})  # the dashboard's first refresh probes; not counted
        before, started = cpu_seconds(serve.proc.pid), time.monotonic()
        for i in range(refreshes):
            serve.ask(request)
            time.sleep(max(0.0, started + (i + 1) * interval - time.monotonic()))
        spent, span = cpu_seconds(serve.proc.pid) - before, time.monotonic() - started
        serve.close()
    return 100.0 * spent / span


def agent_per_request(op: str, count: int, gpus: bool) -> float:
    """CPU milliseconds per ``op`` answered back to back."""
    with tempfile.TemporaryDirectory() as tmp:
        serve = Serve(Path(tmp))
        request: dict[str, Any] = {"op": op, "gpus": gpus} if op == "sample" else {"op": op}
        serve.ask(request)
        before = cpu_seconds(serve.proc.pid)
        for _ in range(count):
            serve.ask(request)
        spent = cpu_seconds(serve.proc.pid) - before
        serve.close()
    return 1000.0 * spent / count


# -- the operator ----------------------------------------------------------------------


def eight_h100_probe() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (ROOT / "tests/fixtures/probe_h100_synthetic.json").read_text()
    )
    first = doc["gpus"][0]
    doc["gpus"] = [dict(first, index=i, uuid=f"GPU-bench-{i}") for i in range(8)]
    return doc


def operator_refreshes(hosts: int, refreshes: int) -> dict[str, list[float]]:
    from rich.console import Console

    from leptonctl.core.dashboard import cluster_frame
    from leptonctl.core.history import History
    from leptonctl.core.records import ACTIVE
    from leptonctl.remote.transport import TransportOptions
    from leptonctl.render.dashboard import cluster_view
    from leptonctl.services.hosts.watch import LiveCluster, data_health, record_history
    from leptonctl.store.sqlite import SqliteStore
    from leptonctl.testing.fake_agent import FakeCluster
    from tests.helpers import make_host

    gpu_doc = eight_h100_probe()
    agent_cpu = [0.0]
    out: dict[str, list[float]] = {"refresh": [], "agents": [], "frame": [], "render": []}

    with tempfile.TemporaryDirectory() as tmp:
        cluster = FakeCluster(Path(tmp) / "hosts")
        names = [f"node{i:03d}" for i in range(hosts)]
        for i, name in enumerate(names):
            fake = cluster.add(name)
            answer = fake.answer
            if i % 2 == 0:
                doc = dict(gpu_doc, hostname=name)
                fake._probe = lambda request=None, doc=doc: dict(doc, time=time.time())  # type: ignore[method-assign]

            def timed_answer(line: bytes, answer: Any = answer) -> Any:
                started = time.process_time()
                try:
                    return answer(line)
                finally:
                    agent_cpu[0] += time.process_time() - started

            fake.answer = timed_answer  # type: ignore[method-assign]
        inventory_hosts = [
            make_host(n, groups=("all", "gpu" if i % 2 == 0 else "cpu"))
            for i, n in enumerate(names)
        ]
        options = TransportOptions(command_timeout=30.0, forks=hosts)
        console = Console(file=io.StringIO(), width=120, height=60, color_system="truecolor")

        async def run() -> None:
            history = History()
            with SqliteStore(Path(tmp) / "state.db") as store:
                pool = cluster.pool(options)
                async with LiveCluster(inventory_hosts, options, store, pool=pool) as live:
                    await live.refresh(wait=60)  # sessions and the first probes: not counted
                    for _ in range(refreshes):
                        agent_cpu[0] = 0.0
                        started = time.process_time()
                        rows = await live.refresh(wait=60)
                        refreshed = time.process_time()
                        now = time.time()
                        record_history(history, rows, live.cpu_pct, now)
                        frame = cluster_frame(
                            rows,
                            live.cpu_pct,
                            store.drained(),
                            store.jobs.in_states(ACTIVE),
                            now,
                            data=data_health(store),
                            history=history,
                        )
                        framed = time.process_time()
                        console.print(cluster_view(frame, 120, 60))
                        rendered = time.process_time()
                        out["refresh"].append(refreshed - started - agent_cpu[0])
                        out["agents"].append(agent_cpu[0])
                        out["frame"].append(framed - refreshed)
                        out["render"].append(rendered - framed)
                        await asyncio.sleep(0.05)

        asyncio.run(run())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refreshes", type=int, default=30)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--gpus", action="store_true", help="samples ask for GPUs too")
    parser.add_argument("--skip-agent", action="store_true")
    args = parser.parse_args()

    if not args.skip_agent:
        print(f"agent (one `agent serve`, {args.refreshes} refreshes every {args.interval:g} s):")
        for op in ("sample", "probe"):
            paced = agent_paced(op, args.refreshes, args.interval, args.gpus)
            per = agent_per_request(op, args.requests, args.gpus)
            print(
                f"  {op:7s} paced: {paced:6.3f} % of one core   back to back: {per:7.3f} ms CPU "
                f"per request = {per / 10 / args.interval:6.3f} % of one core"
            )
    print(f"operator ({args.hosts} fake hosts, {args.refreshes} refreshes, CPU ms per refresh):")
    times = operator_refreshes(args.hosts, args.refreshes)
    for key, label in (
        ("refresh", "sessions + samples (operator side)"),
        ("frame", "store reads + frame"),
        ("render", "render at 120 columns"),
        ("agents", "fake agents' answers (subtracted)"),
    ):
        values = [1000.0 * v for v in times[key]]
        print(
            f"  {label:36s} median {statistics.median(values):7.2f}  "
            f"min {min(values):7.2f}  max {max(values):7.2f}"
        )
    total = [
        sum(times[k][i] for k in ("refresh", "frame", "render")) for i in range(args.refreshes)
    ]
    median = 1000.0 * statistics.median(total)
    print(f"  {'operator total':36s} median {median:7.2f}  = {median / 10 / args.interval:.2f} % "
          f"of one core at a {args.interval:g} s refresh")  # fmt: skip


if __name__ == "__main__":
    main()
