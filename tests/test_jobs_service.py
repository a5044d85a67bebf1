"""What the agent is asked to run: devices and identity in the environment, by allocation."""

from __future__ import annotations

from leptonctl.core.jobviews import agent_spec
from leptonctl.store.jobs import JobRecord


def record(allocation: dict | None, host: str = "gpu07") -> JobRecord:
    return JobRecord(
        id=42, name="train", state="STARTING", priority=0, submitted=0.0, started=None,
        ended=None, host=host, allocation=allocation, exit_code=None, reason=None, attempt=1,
        retries=2, lost_since=None, cancel_requested=False, peak_rss_bytes=None,
        spec={"uid": "beef", "command": ["python", "train.py"], "env": {"A": "1"},
              "workdir": "/data", "walltime": 60.0},
    )  # fmt: skip


def test_assigned_gpus_and_fpgas_are_exported() -> None:
    spec = agent_spec(record({"cpus": 8, "memory_bytes": 0, "gpus": [2, 5], "fpgas": [1]}))
    env = spec["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == "2,5"
    assert env["LEPTON_FPGA_DEVICES"] == "1"
    assert (env["LEPTON_JOB_ID"], env["LEPTON_HOST"], env["A"]) == ("42", "gpu07", "1")
    assert spec["id"] == "42.1.beef"  # one directory per attempt, unique per state store
    assert spec["command"] == ["python", "train.py"] and spec["walltime"] == 60.0


def test_a_job_without_gpus_sees_none() -> None:
    env = agent_spec(record({"cpus": 1, "memory_bytes": 0, "gpus": [], "fpgas": []}))["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_a_planned_host_pins_the_job_only_while_that_host_is_up() -> None:
    from leptonctl.core.jobviews import job_view
    from leptonctl.inventory import parse_inventory

    inventory = parse_inventory("h1\nh2\n", "hosts.ini", fmt="ini")
    queued = record(None)
    queued = JobRecord(**{**queued.__dict__, "spec": {**queued.spec, "planned_host": "h2",
                       "request": {"cpus": 1}}})  # fmt: skip
    assert job_view(queued, inventory, up={"h1", "h2"}).hosts == frozenset({"h2"})
    assert job_view(queued, inventory, up={"h1"}).hosts is None  # h2 is down: anywhere
