"""The agent's ``sample`` op (what a dashboard refresh costs a host) and the live view
that turns two samples into a CPU percentage.

The agent runs for real (its own process, this machine's /proc); the live view's
hosts are ``FakeCluster`` hosts whose ``sample`` is answered by the agent's real handler.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

from agent.lepton_agent import ops, sampling, wire
from leptonctl.core.samples import cpu_percent, parse_sample
from leptonctl.remote.transport import TransportOptions
from leptonctl.services.hosts.watch import LiveCluster
from leptonctl.store.sqlite import SqliteStore
from leptonctl.testing.fake_agent import FakeCluster
from tests.fixtures.agent.fake_nvml.model import H100_MEMORY, FakeNvml, gpu_uuid, h100_box
from tests.helpers import make_host

AGENT_DIR = Path(__file__).resolve().parents[1] / "agent"

PROC_STAT = """\
cpu  4705 150 1120 16250 520 0 30 0 0 0
cpu0 2352 75 560 8125 260 0 15 0 0 0
cpu1 2353 75 560 8125 260 0 15 0 0 0
intr 1462898 0 0 0
ctxt 2890190
btime 1795000000
"""
MEMINFO = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\n"


def agent_request(doc: dict[str, object], data_dir: Path | None = None) -> dict[str, object]:
    """One request to the agent as hosts run it: its own python process, stdin, stdout."""
    where = [] if data_dir is None else ["--data-dir", str(data_dir)]
    result = subprocess.run(
        [sys.executable, str(AGENT_DIR), "request", *where],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    reply: dict[str, object] = json.loads(result.stdout)
    return reply


def test_cpu_times_count_busy_and_idle_ticks_without_guest_time() -> None:
    times = sampling.parse_cpu_times(PROC_STAT)
    # user+nice+system+idle+iowait+irq+softirq+steal; idle+iowait
    assert times == {"total": 4705 + 150 + 1120 + 16250 + 520 + 30, "idle": 16770, "threads": 2}
    assert sampling.parse_cpu_times("intr 1 2\n") is None
    assert sampling.parse_cpu_times("cpu  1 x 3 4\n") is None


def test_a_sample_reads_the_root_it_is_given_and_has_every_reply_key(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "stat").write_text(PROC_STAT)
    (tmp_path / "proc" / "meminfo").write_text(MEMINFO)
    reply = ops.handle({"op": "sample"}, ops.Context(str(tmp_path), str(tmp_path / "data")))
    assert set(reply) == set(wire.reply_keys(wire.Sample))
    assert reply["cpu_times"]["idle"] == 16770
    assert reply["memory"] == {"total_bytes": 16384000 * 1024, "available_bytes": 8192000 * 1024}
    assert reply["gpus"] == [] and reply["unavailable"] == {}


def test_a_host_without_proc_stat_says_why_instead_of_failing(tmp_path: Path) -> None:
    reply = ops.handle({"op": "sample"}, ops.Context(str(tmp_path), str(tmp_path / "data")))
    assert (
        reply["cpu_times"] is None and "no aggregate cpu line" in reply["unavailable"]["cpu_times"]
    )
    assert "memory" in reply["unavailable"]


def test_gpus_must_be_a_flag() -> None:
    reply = agent_request({"op": "sample", "gpus": "yes"})
    assert reply == {"schema": 1, "error": "gpus must be true or false"}


def test_a_sample_says_which_of_the_jobs_asked_about_have_ended(tmp_path: Path) -> None:
    data = tmp_path / "data"
    spec = {"id": "dash-1", "command": ["true"]}
    assert agent_request({"op": "job-start", "spec": spec}, data)["id"] == "dash-1"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (entry,) = agent_request({"op": "job-status", "ids": ["dash-1"]}, data)["jobs"]  # type: ignore[misc]
        if entry["state"] == "COMPLETED":
            break
        time.sleep(0.1)
    reply = agent_request({"op": "sample", "jobs": ["dash-1", "dash-2"]}, data)
    assert reply["jobs"] == {"dash-1": "COMPLETED", "dash-2": "UNKNOWN"}
    assert agent_request({"op": "sample"}, data)["jobs"] == {}  # none asked: none read
    bad = agent_request({"op": "sample", "jobs": ["../etc"]}, data)
    assert "job id must match" in str(bad["error"])
    many = agent_request({"op": "sample", "jobs": [f"j{i}" for i in range(257)]}, data)
    assert many["error"] == "jobs must be a list of at most 256 job ids"


def test_asking_for_gpus_on_a_host_without_any_gives_none_and_a_reason() -> None:
    reply = agent_request({"op": "sample", "gpus": True})
    assert reply["gpus"] == []
    assert isinstance(reply["unavailable"], dict) and "gpus" in reply["unavailable"]


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_two_real_samples_around_busy_work_give_a_cpu_percentage() -> None:
    first = parse_sample(agent_request({"op": "sample"}))
    worker = multiprocessing.get_context("fork").Process(target=_spin, args=(1.0,))
    worker.start()
    worker.join()
    second = parse_sample(agent_request({"op": "sample"}))
    assert first.cpu is not None and second.cpu is not None
    busy = cpu_percent(first.cpu, second.cpu)
    # one of this machine's CPUs spun for a second: at least a share of it shows
    threads = os.cpu_count() or 1
    assert busy is not None and busy >= 100.0 / threads / 4, busy


def test_the_live_view_samples_between_probes_and_reports_cpu_percent(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path / "hosts")
    cluster.add("n1")
    hosts = [make_host("n1")]
    options = TransportOptions(command_timeout=5.0)
    probes: list[str] = []
    fake = cluster["n1"]
    answer = fake.answer

    def counting(line: bytes) -> dict[str, object] | None:
        probes.append(json.loads(line)["op"])
        return answer(line)

    fake.answer = counting  # type: ignore[method-assign]

    async def scenario() -> list[float | None]:
        seen = []
        with SqliteStore(tmp_path / "state.db") as store:
            async with LiveCluster(hosts, options, store, pool=cluster.pool(options)) as live:
                for _ in range(3):
                    rows = await live.refresh(wait=10)
                    assert rows[0].state == "up"
                    seen.append(live.cpu_pct["n1"])
                    _spin(0.3)
        return seen

    seen = asyncio.run(scenario())
    assert seen[0] is None  # one sample: no interval yet
    assert seen[1] is not None and seen[2] is not None and 0.0 <= seen[2] <= 100.0
    assert probes == ["probe", "sample", "sample", "sample"]  # one probe, then samples


# A stand-in for nvidia-smi (no GPU on CI): logs each run, answers the sample's query.
FAKE_SMI = """#!/bin/sh
echo "$*" >> {log}
echo "0, GPU-aaaa, 87, 41, 40321, 81559, 64, 512.34"
echo "1, GPU-bbbb, 0, 0, 0, 81559, 31, [N/A]"
"""


def serve_samples(env: dict[str, str], count: int, tmp_path: Path) -> list[dict[str, object]]:
    """``count`` samples with GPUs from one real ``agent serve`` process."""
    lines = "".join(json.dumps({"op": "sample", "gpus": True}) + "\n" for _ in range(count))
    result = subprocess.run(
        [sys.executable, str(AGENT_DIR), "serve", "--data-dir", str(tmp_path / "data")],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LEPTON_AGENT_NO_NVML": "", **env},
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_gpu_samples_keep_nvml_open_across_a_serve_session(
    tmp_path: Path, fake_nvml: FakeNvml
) -> None:
    log = tmp_path / "nvml.log"
    config = tmp_path / "nvml.conf"
    config.write_text(h100_box(1))
    replies = serve_samples(fake_nvml.env(config, log=log), 3, tmp_path)
    assert len(replies) == 3
    for reply in replies:
        (gpu,) = reply["gpus"]  # type: ignore[misc]
        assert gpu["index"] == 0 and gpu["uuid"] == gpu_uuid(0)  # type: ignore[index]
        assert gpu["memory_total_bytes"] == H100_MEMORY  # type: ignore[index]
        assert set(gpu) == set(sampling.GPU_FIELDS)  # type: ignore[arg-type]
    calls = log.read_text().split()
    assert calls.count("init") == 1 and "shutdown" not in calls  # once, not per refresh


def test_without_nvml_a_gpu_sample_is_one_nvidia_smi_run(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "smi.log"
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI.format(log=log))
    smi.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LEPTON_AGENT_NO_NVML": "1"}
    replies = serve_samples(env, 2, tmp_path)
    first, second = replies[0]["gpus"]  # type: ignore[misc]
    assert first == {
        "index": 0, "uuid": "GPU-aaaa", "utilization_pct": 87.0, "memory_utilization_pct": 41.0,
        "memory_used_bytes": 40321 * 2**20, "memory_total_bytes": 81559 * 2**20,
        "temperature_c": 64.0, "power_w": 512.34,
    }  # fmt: skip
    assert second["power_w"] is None and second["utilization_pct"] == 0.0  # type: ignore[index]
    runs = log.read_text().splitlines()
    assert len(runs) == 2  # one run per sample: no process or CUDA-version queries
    assert runs[0].startswith("--query-gpu=index,uuid,utilization.gpu")
