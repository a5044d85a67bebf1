"""A user whose login shell is tcsh, with rc files that print (a `.cshrc` banner on stdout
without a final newline, `module` chatter on stderr), on the cluster profile: a shared home,
a host without python3 on its PATH.  sshd runs every command leptonctl sends, and the
forced command of each transfer key, through that shell.  Before, nothing worked: the probe
died with "Bad : modifier in $ '-'", `exec -- 'cmd 2>&1'` with "Ambiguous output redirect",
jobs never started and copies failed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptonctl.cli.app import run
from tests.conftest import LAB_HOSTS, _lab_address, _operator_for, write_inventory
from tests.lab import ClusterProfile, Lab

pytestmark = pytest.mark.lab

TCSH = ClusterProfile(shell="/usr/bin/tcsh", no_python=frozenset({"h3"}))


@pytest.fixture(scope="module")
def tcsh_lab() -> Iterator[Lab]:
    reason = Lab.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the sshd lab is unavailable: {reason}")
    if not Path(TCSH.shell).is_file():
        pytest.skip(f"{TCSH.shell} is not installed (apt-get install tcsh; .ci/run does)")
    prefix, first_ip = _lab_address()  # after the root lab's and the cluster lab's addresses
    with Lab(
        3, prefix=f"{prefix[:7]}t", first_ip=first_ip + 2 * (LAB_HOSTS + 1), profile=TCSH
    ) as lab:
        yield lab


@pytest.fixture
def base(tcsh_lab: Lab, operator_home: Path, tmp_path: Path) -> tuple[str, ...]:
    _operator_for(tcsh_lab, operator_home)
    inv = write_inventory(tmp_path / "inventory.yaml", tcsh_lab)
    return ("-i", str(inv), "--state", str(tmp_path / "state.db"))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_the_lab_users_login_shell_is_a_chatty_tcsh(tcsh_lab: Lab) -> None:
    # what the tests below stand on: sshd runs commands through tcsh, whose .cshrc prints
    argv = tcsh_lab.ssh_argv("h1", "echo $version", user=tcsh_lab.user)
    said = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert "tcsh" in said.stdout and "Welcome to the lab cluster" in said.stdout
    assert "module: loaded" in said.stderr


def test_status_and_exec_work_for_a_tcsh_user(
    tcsh_lab: Lab, base: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, *base, "status", "--json")
    assert code == 0, err
    assert {h["host"]: h["state"] for h in json.loads(out)["hosts"]} == {
        "h1": "up",
        "h2": "up",
        "h3": "up",
    }

    snippets = {
        "echo a 2>&1 | cat": "a\n",
        'echo ${0##*/} $((6*7)) `echo q` "$HOME"': f"sh 42 q {tcsh_lab.home}\n",
        "x='it''s'; printf '%s!\\n' \"$x\"": "its!\n",
    }
    for snippet, expected in snippets.items():
        code, out, err = cli(capsys, *base, "exec", "--json", "--", snippet)
        assert code == 0, err
        results = json.loads(out)["results"]
        assert {r["host"]: (r["stdout"], r["stderr"]) for r in results} == {
            name: (expected, "") for name in ("h1", "h2", "h3")
        }, snippet

    code, out, err = cli(capsys, *base, "exec", "--json", "--", "echo oops >&2; exit 3")
    results = json.loads(out)["results"]
    assert {(r["exit_status"], r["stderr"]) for r in results} == {(3, "oops\n")}


def test_jobs_submit_wait_log_and_cancel_for_a_tcsh_user(
    tcsh_lab: Lab, base: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        capsys, *base, "submit", "--json", "--wait", "--", "echo job on $(hostname) 2>&1 | cat"
    )
    assert code == 0, err
    code, out, err = cli(capsys, *base, "jobs", "--all", "--json")
    assert code == 0, err
    jobs = json.loads(out)["jobs"]
    assert len(jobs) == 1 and jobs[0]["state"] == "COMPLETED", jobs
    job_id = jobs[0]["id"]
    code, out, err = cli(capsys, *base, "logs", str(job_id))
    assert code == 0 and out.startswith("job on h"), (out, err)

    code, out, err = cli(capsys, *base, "submit", "--json", "--", "sleep 341")
    assert code == 0, err
    running = json.loads(out)["id"]
    code, _, err = cli(capsys, *base, "cancel", str(running))
    assert code == 0, err
    deadline = time.monotonic() + 30
    while True:
        _, out, _ = cli(capsys, *base, "jobs", "--all", "--json")
        state = {j["id"]: j["state"] for j in json.loads(out)["jobs"]}[running]
        if state == "CANCELLED" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state == "CANCELLED"
    for name in ("h1", "h2", "h3"):
        assert not tcsh_lab.pids_matching(name, b"sleep\x00341")


def test_data_and_host_to_host_copies_for_a_tcsh_user(
    tcsh_lab: Lab, base: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "blob"
    src.write_bytes(bytes(range(256)) * 4096)
    code, _, err = cli(capsys, *base, "data", "put", str(src), "blob", "-k", "2")
    assert code == 0, err
    code, _, err = cli(capsys, *base, "data", "get", "blob", str(tmp_path / "back"))
    assert code == 0, err
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    code, _, err = cli(capsys, *base, "data", "verify")
    assert code == 0, err

    scratch = "/scratch/tcsh.src"
    tcsh_lab.path_on("h1", scratch).write_bytes(b"payload " * 4096)
    tcsh_lab.give(tcsh_lab.path_on("h1", scratch))
    # h3 has no python3 on its PATH: its forced command runs the agent's own interpreter
    for dest in ("h2", "h3"):
        code, out, err = cli(capsys, *base, "cp", "--json", f"h1:{scratch}", f"{dest}:/scratch/c")
        assert code == 0, err
        assert json.loads(out)["route"] == ["h1", dest]  # direct, the forced command ran
        assert tcsh_lab.path_on(dest, "/scratch/c").read_bytes() == b"payload " * 4096
