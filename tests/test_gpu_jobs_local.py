"""GPU jobs end to end on the embedded default (this machine, `connection: local`), its
agent reading eight H100s from the fake libnvidia-ml: an NVLink pair for a two-GPU job, a
GPU with another process busy (and why), jobs told their GPUs and MIG devices by UUID."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.fixtures.agent.fake_nvml.model import FakeNvml, gpu_uuid, h100_box, mig_uuid


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is no leptonctl job's (the fake NVML puts it on a GPU)."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def use_box(
    tmp_path: Path, fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, config: str
) -> None:
    path = tmp_path / "nvml.conf"
    path.write_text(config)
    for key, value in fake_nvml.env(path).items():
        monkeypatch.setenv(key, value)


def test_a_two_gpu_dry_run_takes_an_nvlink_pair_beside_a_busy_gpu(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fake_nvml: FakeNvml,
    monkeypatch: pytest.MonkeyPatch,
    stranger: subprocess.Popen[bytes],
) -> None:
    use_box(tmp_path, fake_nvml, monkeypatch, h100_box(processes={0: [(stranger.pid, 1 << 30)]}))
    code, out, err = cli(capsys, "status", "--json")  # probes, and stores what it saw
    assert code == 0, err
    (host,) = json.loads(out)["hosts"]
    assert [g["uuid"] for g in host["gpus"]] == [gpu_uuid(i) for i in range(8)]
    me = pwd.getpwuid(os.getuid()).pw_name
    busy = f"used by {me} pid {stranger.pid} (sleep)"
    assert host["gpus"][0]["placement"] == {"state": "busy", "why": busy}
    assert host["gpus"][1]["placement"] == {"state": "free", "why": "free"}
    monkeypatch.setenv("COLUMNS", "300")  # the table, unabridged
    code, out, _ = cli(capsys, "status")
    assert code == 0 and busy in out
    code, out, err = cli(capsys, "submit", "--gpus", "2", "--dry-run", "--json", "--", "true")
    assert code == 0, err
    (planned,) = json.loads(out)["placements"]
    # GPU 0 is busy: 1 and 2 are the lowest free indexes, 2 and 3 are joined by NVLink
    assert planned["gpu_devices"] == [
        {"id": "2", "uuid": gpu_uuid(2)},
        {"id": "3", "uuid": gpu_uuid(3)},
    ]
    assert planned["why"].startswith("GPUs 2,3: NVLink x18")
    assert f"not used: GPU 0: {busy}" in planned["why"]


def test_jobs_see_their_gpu_and_mig_device_by_uuid(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fake_nvml: FakeNvml,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_box(tmp_path, fake_nvml, monkeypatch, h100_box(mig_gpu=7))
    echo = 'echo "$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES"'
    results = {}
    for ask in (["--gpus", "1"], ["--gpus", "1", "--gpu-type", "3g.40gb"]):
        code, out, err = cli(capsys, "submit", "--json", "--wait", *ask, "--", echo)
        assert code == 0, err
        job_id = json.loads(out.splitlines()[0])["id"]
        _, log, _ = cli(capsys, "logs", str(job_id))
        _, shown, _ = cli(capsys, "show", str(job_id), "--json")
        results[ask[-1]] = (log.strip(), json.loads(shown)["allocation"]["gpu_devices"])
    assert results["1"] == (f"{gpu_uuid(0)}|{gpu_uuid(0)}", [{"id": "0", "uuid": gpu_uuid(0)}])
    mig = mig_uuid(7, 1)
    assert results["3g.40gb"] == (f"{mig}|{mig}", [{"id": "7/mig1", "uuid": mig}])


def test_a_leptonctl_jobs_process_leaves_its_gpu_to_the_job_a_strangers_makes_it_busy(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fake_nvml: FakeNvml,
    monkeypatch: pytest.MonkeyPatch,
    stranger: subprocess.Popen[bytes],
) -> None:
    use_box(tmp_path, fake_nvml, monkeypatch, h100_box())
    pid_file = tmp_path / "job.pid"
    code, out, err = cli(
        capsys,
        "submit",
        "--json",
        "--",
        f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60",
    )
    assert code == 0, err
    job_id = json.loads(out.splitlines()[0])["id"]
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        job_pid = int(pid_file.read_text())
        # the fake driver now shows the job's process on GPU 0, the stranger's on GPU 1
        use_box(tmp_path, fake_nvml, monkeypatch, h100_box(
            processes={0: [(job_pid, 1 << 30)], 1: [(stranger.pid, 1 << 30)]}
        ))  # fmt: skip
        code, out, err = cli(capsys, "status", "--json")
        assert code == 0, err
        (host,) = json.loads(out)["hosts"]
        assert host["gpus"][0]["placement"] == {"state": "job", "why": f"leptonctl job {job_id}"}
        assert host["gpus"][1]["placement"]["state"] == "busy"
        code, out, err = cli(capsys, "submit", "--gpus", "1", "--dry-run", "--json", "--", "true")
        assert code == 0, err
        (planned,) = json.loads(out)["placements"]
        assert planned["gpu_devices"] == [{"id": "0", "uuid": gpu_uuid(0)}]
    finally:
        cli(capsys, "cancel", str(job_id))
