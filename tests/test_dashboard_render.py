"""The live dashboards as people see them: pure renderers recorded with a real rich Console
at 80, 120 and 200 columns, on realistic facts.

The GPU host is a synthetic 8x H100 probe (the captured-format fixture
``probe_h100_synthetic.json`` with its GPUs repeated to eight, utilisation and memory varied):
GPUs are the one thing faked here, since the test machines have none.  The other hosts are
the same probe on a host that is down, one that is drained, and one that runs jobs.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from rich.console import Console

from leptonctl.core.dashboard import DataHealth, cluster_frame, live_jobs, queue_frame
from leptonctl.core.facts import HostFacts
from leptonctl.core.history import History, sparkline
from leptonctl.core.records import JobRecord
from leptonctl.core.reports import HostStatus
from leptonctl.core.samples import CpuTimes, apply_sample, cpu_percent, parse_sample
from leptonctl.errors import Unreachable
from leptonctl.render.dashboard import cluster_view
from leptonctl.render.dashboard_documents import cluster_document, queue_document
from leptonctl.render.queue_dashboard import queue_view
from tests.helpers import gpu_facts, make_host

NOW = 1795370100.0
WIDTHS = (80, 120, 200)


def eight_h100() -> HostFacts:
    """The synthetic probe with eight H100s: 0-3 busy (a job), 4-7 idle."""
    facts = gpu_facts()
    first = facts.gpus[0]
    gpus = []
    for index in range(8):
        busy = index < 4
        gpus.append(
            dataclasses.replace(
                first,
                index=index,
                uuid=f"GPU-synthetic-{index}",
                utilization_pct=97.0 - index if busy else 0.0,
                memory_used_bytes=(60 + index) * 2**30 if busy else 2**20,
                temperature_c=71.0 + index if busy else 33.0,
                power_w=612.0 if busy else 70.0,
                processes=first.processes if busy else (),
            )
        )
    return dataclasses.replace(facts, gpus=tuple(gpus))


def cpu_host_facts() -> HostFacts:
    return dataclasses.replace(gpu_facts(), gpus=(), hostname="cpu01")


def job(job_id: int, name: str, state: str, host: str | None, **kw: object) -> JobRecord:
    fields: dict[str, object] = {
        "spec": {"command": ["python", "train.py"], "walltime": 3600.0},
        "priority": 0,
        "submitted": NOW - 900,
        "started": NOW - 600 if state in ("RUNNING", "STARTING") else None,
        "ended": None,
        "host": host,
        "allocation": {"cpus": 16, "gpus": [0, 1, 2, 3]} if host == "gpu01" else None,
        "exit_code": None,
        "reason": None,
        "attempt": 0,
        "retries": 0,
        "lost_since": None,
        "cancel_requested": False,
        "peak_rss_bytes": None,
    }
    fields.update(kw)
    return JobRecord(id=job_id, name=name, state=state, **fields)  # type: ignore[arg-type]


def jobs() -> list[JobRecord]:
    return [
        job(41, "llama-finetune", "RUNNING", "gpu01"),
        job(42, "eval-sweep", "RUNNING", "cpu01", allocation={"cpus": 8}),
        job(43, "big-pretrain", "PENDING", None, reason="Resources: needs 16 GPUs"),
        job(
            40, "preprocess", "COMPLETED", "cpu01", ended=NOW - 120, exit_code=0, started=NOW - 400
        ),
        job(39, "broken", "FAILED", "cpu01", ended=NOW - 60, exit_code=3, started=NOW - 90),
    ]


def frame(by: str = "state"):  # type: ignore[no-untyped-def]
    rows = [
        HostStatus(make_host("gpu01", groups=("all", "gpu")), eight_h100(), NOW - 1),
        HostStatus(make_host("cpu01", groups=("all", "cpu")), cpu_host_facts(), NOW - 1),
        HostStatus(make_host("cpu02", groups=("all", "cpu")), cpu_host_facts(), NOW - 1),
        HostStatus(
            make_host("gpu02", groups=("all", "gpu")),
            eight_h100(),
            NOW - 700,
            error=Unreachable("gpu02", "10.0.0.12 refused the connection"),
        ),
    ]
    history = History()
    for step in range(60):
        at = NOW - 300 + step * 5
        history.add("cpu:gpu01", at, 20.0 + step)
        history.add("gpu:gpu01", at, 48.0)
        history.add("cpu:cpu01", at, 90.0)
    cpu = {"gpu01": 80.0, "cpu01": 93.5, "cpu02": 2.0}
    drained = {"cpu02": ("disk replacement", NOW - 3600)}
    active = [j for j in jobs() if j.state in ("RUNNING", "PENDING")]
    data = DataHealth(datasets=3, under_replicated=2, lost=0, corrupt=1)
    return cluster_frame(rows, cpu, drained, active, NOW, data=data, history=history, by=by)


def recorded(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, height=60)
    console.print(renderable)
    return console.export_text()


STATES = ("up", "down", "drained", "unhealthy", "pending")


def host_lines(text: str, name: str) -> list[str]:
    """The lines of the hosts table that are ``name``'s (not its per-GPU detail)."""
    return [
        line
        for line in text.splitlines()
        if line.startswith(name + " ") and line.split()[1] in STATES
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_cluster_dashboard_fits_the_width_with_one_line_per_host(width: int) -> None:
    text = recorded(cluster_view(frame(), width), width)
    assert all(len(line) <= width for line in text.splitlines()), text
    for name in ("gpu01", "cpu01", "cpu02", "gpu02"):
        assert len(host_lines(text, name)) == 1, (name, text)
    gpu01 = host_lines(text, "gpu01")[0]
    assert " 80%" in gpu01  # CPU utilisation from samples, not the load average (12.5)
    assert "41 llama" in gpu01  # its running job, by id and name
    assert "42 eval" in host_lines(text, "cpu01")[0]
    assert "down" in host_lines(text, "gpu02")[0]
    assert "drained" in host_lines(text, "cpu02")[0]


@pytest.mark.parametrize("width", WIDTHS)
def test_cluster_dashboard_header_has_the_totals(width: int) -> None:
    text = recorded(cluster_view(frame(), width), width)
    assert "2 up" in text and "1 down" in text and "1 drained" in text
    assert "4/8 allocated, 4 busy" in text  # gpu01's eight H100s; gpu02 is down
    assert "H100 80GB HBM3" in text
    assert "1 running" not in text and "2 running" in text and "1 pending" in text
    assert "Resources: needs 16 GPUs" in text  # the longest-pending reason
    assert "2 chunks under-replicated" in text and "1 corrupt replicas" in text
    # 672 threads up, busy: 224 x (0.80 + 0.935 + 0.02)
    assert "393.1/672 threads busy" in text


def test_problems_come_first_and_their_reasons_are_listed() -> None:
    text = recorded(cluster_view(frame(), 120), 120)
    order = [
        line.split()[0]
        for line in text.splitlines()
        if line[:5] in ("gpu01", "gpu02", "cpu01", "cpu02") and line.split()[1] in STATES
    ]
    assert order[:4] == ["gpu02", "cpu02", "gpu01", "cpu01"], text
    assert "gpu02: 10.0.0.12 refused the connection (last seen 11m ago)" in text
    assert "cpu02: drained: disk replacement" in text


def test_grouping_by_group_labels_each_group_problems_first_inside() -> None:
    text = recorded(cluster_view(frame(by="group"), 120), 120)
    lines = text.splitlines()
    cpu_label = next(i for i, line in enumerate(lines) if line.startswith("[cpu]"))
    gpu_label = next(i for i, line in enumerate(lines) if line.startswith("[gpu]"))
    names = [
        line.split()[0]
        for line in lines
        if line[:1] in "cg" and line.split()[1:2] in (["up"], ["down"], ["drained"])
    ]
    assert cpu_label < gpu_label
    assert names[:4] == ["cpu02", "cpu01", "gpu02", "gpu01"]


def test_columns_are_dropped_not_wrapped_as_the_terminal_narrows() -> None:
    wide = recorded(cluster_view(frame(), 200), 200)
    medium = recorded(cluster_view(frame(), 120), 120)
    narrow = recorded(cluster_view(frame(), 80), 80)
    assert "CPU HISTORY" in wide and "GPU HISTORY" in wide and "LOAD" in wide
    assert "CPU HISTORY" in medium
    assert "CPU HISTORY" not in narrow and "GPU HISTORY" not in narrow
    for text in (wide, medium, narrow):
        header = next(line for line in text.splitlines() if line.startswith("HOST"))
        assert "CPU" in header and "JOBS" in header and "MEM" in header


def test_sparklines_show_the_last_minutes_of_utilisation() -> None:
    text = recorded(cluster_view(frame(), 200), 200)
    gpu01 = host_lines(text, "gpu01")[0]
    history = frame().history
    rising = sparkline(history.buckets("cpu:gpu01", NOW, 30))  # 30 columns at 200 wide
    assert rising in gpu01 and rising[0] in "▂▃" and rising[-1] in "▆▇"
    assert "█" * 3 in host_lines(text, "cpu01")[0]  # 90 % all along


def test_per_gpu_detail_shows_each_gpu_and_the_job_holding_it_when_there_is_room() -> None:
    text = recorded(cluster_view(frame(), 120, height=60), 120)
    detail = [
        line
        for line in text.splitlines()
        if line.startswith("gpu01 ") and line.split()[1].isdigit()
    ]
    assert len(detail) == 8, text
    assert sum("41 llama-finetune" in line for line in detail) == 4
    short = recorded(cluster_view(frame(), 120, height=16), 120)
    assert "per-GPU detail: 8 GPUs" in short
    assert not [
        line
        for line in short.splitlines()
        if line.startswith("gpu01 ") and line.split()[1].isdigit()
    ]


def test_more_hosts_than_lines_keeps_the_problems_on_screen_and_counts_the_rest() -> None:
    rows = [HostStatus(make_host(f"n{i:02d}"), cpu_host_facts(), NOW) for i in range(40)]
    rows.append(
        HostStatus(make_host("sick"), None, None, error=Unreachable("sick", "no route to host"))
    )
    big = cluster_frame(rows, {}, {}, [], NOW)
    text = recorded(cluster_view(big, 100, height=24), 100)
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= 24, text
    assert host_lines(text, "sick") and "down" in host_lines(text, "sick")[0]
    shown = sum(1 for line in lines if line.startswith("n") and line.split()[1] == "up")
    assert f"… {40 - shown} more hosts ({40 - shown} up): a taller terminal shows them" in text


def test_host_strings_are_printed_literally() -> None:
    rows = [HostStatus(make_host("evil"), cpu_host_facts(), NOW)]
    bad = job(7, "[bold red]x\x1b[2J", "RUNNING", "evil")
    text = recorded(cluster_view(cluster_frame(rows, {}, {}, [bad], NOW), 120), 120)
    assert "[bold red]x\\x1b[2J" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_jobs_dashboard_is_squeue_like_and_fits(width: int) -> None:
    queue = queue_frame(jobs(), NOW)
    text = recorded(queue_view(queue, width), width)
    assert all(len(line) <= width for line in text.splitlines()), text
    lines = {line.split()[0]: line for line in text.splitlines() if line[:2].isdigit()}
    assert "RUNNING" in lines["41"] and "10:00" in lines["41"]  # elapsed
    assert "PENDING" in lines["43"] and "Resources" in lines["43"]
    if width >= 120:
        assert "50:00" in lines["41"]  # walltime left
        assert "gpu0,gpu1,gpu2,gpu3" in lines["41"]
    assert "recently ended" in text
    assert "FAILED" in lines["39"] and "COMPLETED" in lines["40"]
    assert list(lines)[:3] == ["41", "42", "43"]  # running first, then pending


def test_jobs_dashboard_leaves_out_jobs_that_ended_long_ago() -> None:
    old = job(30, "ancient", "COMPLETED", "cpu01", ended=NOW - 7200, exit_code=0)
    queue = queue_frame([*jobs(), old], NOW)
    assert [r.id for r in queue.ended] == [39, 40]


def test_json_documents_carry_utilisation_jobs_and_totals() -> None:
    doc = json.loads(json.dumps(cluster_document(frame())))
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert hosts["gpu01"]["dashboard"]["cpu_pct"] == 80.0
    assert hosts["gpu01"]["dashboard"]["jobs"][0]["id"] == 41
    assert hosts["cpu02"]["dashboard"]["state"] == "drained"
    assert doc["totals"]["jobs_running"] == 2 and doc["totals"]["hosts"]["down"] == 1
    assert doc["totals"]["gpus"][0]["allocated"] == 4
    assert len(hosts["gpu01"]["dashboard"]["cpu_history"]) == 30
    queue = json.loads(json.dumps(queue_document(queue_frame(jobs(), NOW))))
    running = next(j for j in queue["jobs"] if j["id"] == 41)
    assert running["elapsed_s"] == 600.0 and running["remaining_s"] == 3000.0
    assert [j["id"] for j in queue["recently_ended"]] == [39, 40]


# -- samples and history (pure) ------------------------------------------------------


def test_jobs_their_host_says_have_ended_leave_the_dashboard_before_the_next_reconcile() -> None:
    running = [j for j in jobs() if j.state in ("RUNNING", "PENDING")]
    ended_on_gpu01 = {"gpu01": {running[0].agent_id: "COMPLETED"}}
    still = {"gpu01": {running[0].agent_id: "RUNNING"}, "cpu01": {running[1].agent_id: "UNKNOWN"}}
    assert [j.id for j in live_jobs(running, ended_on_gpu01)] == [42, 43]
    assert [j.id for j in live_jobs(running, still)] == [41, 42, 43]
    sample = parse_sample({"jobs": {"1.0.x": "LOST", "2.0.x": "BOGUS", "3.0.x": 7}})
    assert sample.jobs == {"1.0.x": "LOST"}  # what is not a state is not believed


def test_cpu_percent_is_the_busy_share_of_ticks_between_two_samples() -> None:
    assert cpu_percent(CpuTimes(1000, 800), CpuTimes(1400, 900)) == 75.0
    assert cpu_percent(None, CpuTimes(1400, 900)) is None
    assert cpu_percent(CpuTimes(1400, 900), CpuTimes(100, 50)) is None  # a reboot
    assert cpu_percent(CpuTimes(1000, 800), CpuTimes(1000, 800)) is None  # no tick


def test_a_sample_updates_memory_load_and_gpu_utilisation_of_the_probe() -> None:
    facts = eight_h100()
    sample = parse_sample(
        {
            "time": NOW,
            "cpu_times": {"total": 10, "idle": 4, "threads": 224},
            "load": [1.0, 2.0, 3.0],
            "memory": {"total_bytes": 100, "available_bytes": 40},
            "gpus": [{"index": 5, "utilization_pct": 55.0, "memory_used_bytes": 7}],
        }
    )
    updated = apply_sample(facts, sample)
    assert updated.memory.available_bytes == 40 and updated.cpu.load == (1.0, 2.0, 3.0)
    assert updated.gpus[5].utilization_pct == 55.0 and updated.gpus[5].memory_used_bytes == 7
    assert updated.gpus[0] == facts.gpus[0]


def test_a_malformed_sample_reads_as_unknown_not_as_numbers() -> None:
    sample = parse_sample(
        {"cpu_times": {"total": "9", "idle": 1}, "load": [1, "x", 2], "memory": [], "gpus": [{}]}
    )
    assert sample.cpu is None and sample.load is None and sample.gpus == ()
    assert sample.memory_total_bytes is None
    assert parse_sample({"cpu_times": {"total": 5, "idle": 9}}).cpu is None  # idle > total


def test_history_buckets_cover_the_window_and_leave_gaps_blank() -> None:
    history = History(window=100.0)
    history.add("cpu:a", 0.0, 100.0)  # falls out of the window
    history.add("cpu:a", 150.0, 0.0)
    history.add("cpu:a", 195.0, 100.0)
    values = history.buckets("cpu:a", 200.0, 4)
    assert values == [None, None, 0.0, 100.0]
    assert sparkline(values) == "  ▁█"
