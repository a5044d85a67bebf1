"""Submit options and batch files are read into plain data, with errors that say where."""

from __future__ import annotations

import re

import pytest

from leptonctl.core.jobspec import (
    Submission,
    expand_array,
    make_request,
    parse_array,
    parse_batch,
    parse_duration,
    parse_env,
    parse_estimates,
)
from leptonctl.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1:30:00", 5400),
     ("30:00", 1800), ("1.5h", 5400)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1:2:3:4", "-5", "0", "5 weeks"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--time"):
        parse_duration(text)


def test_arrays_follow_slurm_forms() -> None:
    assert parse_array("0-3") == [0, 1, 2, 3]
    assert parse_array("1,3,5") == [1, 3, 5]
    assert parse_array("0-10:5") == [0, 5, 10]
    with pytest.raises(UsageError):
        parse_array("5-1")


def test_array_expansion_names_and_exports_the_index() -> None:
    jobs = expand_array(Submission(name="sweep", command="echo"), [0, 7])
    assert [j.name for j in jobs] == ["sweep[0]", "sweep[7]"]
    assert jobs[1].env["LEPTON_ARRAY_INDEX"] == "7" and jobs[1].array_index == 7


def test_env_and_estimates() -> None:
    assert parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    assert parse_estimates(["gpu=10m", "h100=300"]) == {"gpu": 600.0, "h100": 300.0}
    with pytest.raises(UsageError):
        parse_env(["1BAD=x"])


def test_request_sizes() -> None:
    request = make_request(cpus=4, mem="16GiB", gpus=2, gpu_type="H100", gpu_mem="40G")
    assert request.memory_bytes == 16 * 2**30 and request.gpu_memory_bytes == 40 * 2**30
    with pytest.raises(UsageError, match="--mem"):
        make_request(mem="lots")


def test_batch_file_reads_entries_arrays_and_dependencies() -> None:
    document = {
        "jobs": [
            {"name": "prep", "command": "make data", "cpus": 2},
            {"name": "train", "command": ["python", "train.py", "--lr", "0.1"], "gpus": 1,
             "after": "prep", "est": {"gpu": 600, "h100": "5m"}, "time": "1h"},
            {"name": "eval", "command": "python eval.py", "array": "0-2", "after": ["train"]},
        ]
    }  # fmt: skip
    jobs = parse_batch(document, "jobs.yaml")
    assert [j.name for j in jobs] == ["prep", "train", "eval[0]", "eval[1]", "eval[2]"]
    assert jobs[1].command == ("python", "train.py", "--lr", "0.1")
    assert jobs[1].estimates == {"gpu": 600.0, "h100": 300.0} and jobs[1].walltime == 3600
    assert jobs[0].after == () and jobs[1].after == ("prep",) and jobs[2].after == ("train",)


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"command": ""}, "entry 0 (command)"),
        ({"command": "x", "gpus": -1}, "entry 0 (gpus)"),
        ({"command": "x", "gpus": "two"}, "entry 0 (gpus)"),
        ({"command": "x", "colour": "red"}, "entry 0 (colour)"),
        ({"command": "x", "est": [1, 2]}, "entry 0 (est)"),
        ({"command": "x", "time": "soon"}, "entry 0 (time)"),
        ({"command": "x", "mem": "lots"}, "entry 0 (resources)"),
    ],
)
def test_bad_batch_entries_name_index_and_field(entry: dict, where: str) -> None:
    with pytest.raises(UsageError, match=re.escape(f"jobs.yaml: {where}")):
        parse_batch({"jobs": [entry]}, "jobs.yaml")


def test_batch_without_jobs_list_is_rejected() -> None:
    with pytest.raises(UsageError, match="jobs:"):
        parse_batch({"job": []}, "jobs.yaml")
    with pytest.raises(UsageError, match="duplicate name"):
        parse_batch({"jobs": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]}, "f")
