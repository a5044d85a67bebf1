"""Everything people copy in is parsed within bounds, and every mistake is a usage error.

* YAML (inventory, playbook, batch file) goes through one bounded safe loader: an alias
  bomb, deep nesting or a huge file is refused at once with the file and line.
* Host ranges (inventory, ``--limit``, a playbook's ``hosts:``) and ``--array`` are
  counted before anything is built: past 100,000 they are refused.
* Bad values (``--priority`` past 64 bits, ``NAME@VERSION`` past 64 bits, ``--chunk-size
  10XB``, ``--time 0:0``, ``--workdir ''``, a batch env name with ``=``, a file that is
  not UTF-8) are usage errors (exit 2) naming the option or the file and line.
* Hypothesis throws text at the INI and YAML inventory parsers, the playbook and batch
  parsers and ``--limit``: a clean ``LeptonError`` or a result, quickly, never a crash.

The tests that would exhaust memory on a parser without bounds run ``leptonctl`` in a
child process limited to 768 MiB of address space and 60 s.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leptonctl.cli.app import run
from leptonctl.core.jobspec import (
    MAX_ARRAY_TASKS,
    check_inputs,
    parse_array,
    parse_batch,
    parse_batch_text,
)
from leptonctl.core.playbook import parse_playbook
from leptonctl.errors import ExitCode, LeptonError, UsageError
from leptonctl.inventory import parse_inventory, select_hosts
from leptonctl.inventory.ranges import MAX_HOSTS, expand_host_pattern

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 768 * 2**20


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def bounded(*argv: str, cwd: Path) -> tuple[int, str]:
    """``leptonctl ARGV`` in a child with 768 MiB of address space: (exit code, stderr)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "leptonctl", *argv],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"leptonctl {' '.join(argv)[:200]} ran for more than 60 s")
    return proc.returncode, " ".join(proc.stderr.split())


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``leptonctl ARGV`` in this process: (exit code, stderr with whitespace folded)."""
    capsys.readouterr()
    code = run(list(argv))
    return code, " ".join(capsys.readouterr().err.split())


# -- YAML: alias bombs, depth ------------------------------------------------------------

LEVELS = "abcdefghi"


def bomb(indent: str) -> str:
    """Nine anchors, each a list of nine aliases of the one before: 9**9 values expanded."""
    lines = [f'{indent}a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for before, name in itertools.pairwise(LEVELS):
        lines.append(f"{indent}{name}: &{name} [{', '.join([f'*{before}'] * 9)}]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "inventory": ("hosts.yaml", "all:\n  vars:\n" + bomb("    ") + "  hosts:\n    h1:\n"),
    "playbook": (
        "book.yaml",
        "x:\n" + bomb("  ") + "steps:\n  - shell: {command: *i}\n",
    ),
    "batch": ("jobs.yaml", "x:\n" + bomb("  ") + "jobs:\n  - command: *i\n"),
}


def _argv(kind: str, path: Path) -> list[str]:
    if kind == "inventory":
        return ["-i", str(path), "submit", "--dry-run", "--", "true"]
    if kind == "playbook":
        return ["maintain", "--check", str(path)]
    return ["submit", "--dry-run", "--file", str(path)]


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_an_alias_bomb_is_refused_at_once_with_its_file_and_line(kind: str, tmp_path: Path) -> None:
    name, text = BOMBS[kind]
    path = tmp_path / name
    path.write_text(text)
    assert len(text) < 1500
    code, err = bounded("--state", str(tmp_path / "s.db"), *_argv(kind, path), cwd=tmp_path)
    assert code == ExitCode.USAGE, err
    assert re.search(rf"{name}:\d+", err) and "alias" in err


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_deep_nesting_is_a_usage_error_not_a_recursion_error(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = BOMBS[kind]
    path = tmp_path / name
    key = {"inventory": "all", "playbook": "steps", "batch": "jobs"}[kind]
    path.write_text(f"{key}: " + "[" * 5000 + "]" * 5000 + "\n")
    code, err = cli(capsys, "--state", str(tmp_path / "s.db"), *_argv(kind, path))
    assert code == ExitCode.USAGE
    assert f"{name}:1" in err and "nested more than" in err


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_file_that_is_not_utf8_is_a_usage_error_naming_its_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = BOMBS[kind]
    path = tmp_path / name
    path.write_bytes(b"# latin-1 below\n# caf\xe9\n")
    code, err = cli(capsys, "--state", str(tmp_path / "s.db"), *_argv(kind, path))
    assert code == ExitCode.USAGE
    assert f"{name}:2" in err and "UTF-8" in err


def test_a_value_yaml_cannot_build_is_an_error_with_its_line() -> None:
    with pytest.raises(LeptonError, match=r"book.yaml:3"):
        parse_playbook("steps:\n  - gc:\n      days: 2026-13-45\n", "book.yaml")
    with pytest.raises(UsageError, match=r"jobs.yaml:2"):
        parse_batch_text("jobs:\n  - {command: x, cpus: " + "9" * 5000 + "}\n", "jobs.yaml")


def test_a_capacity_string_in_an_ini_inventory_is_read_with_the_same_bounds() -> None:
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(LeptonError, match=r"hosts.ini:2 \(capacity\).*nested more than"):
        parse_inventory(f'[gpu]\nh1 capacity="{{cpus: {deep}}}"\n', "hosts.ini")
    aliases = bomb("").replace("\n", ", ").rstrip(", ")
    with pytest.raises(LeptonError, match=r"hosts.ini:2 \(capacity\).*alias"):
        parse_inventory(f'[gpu]\nh1 capacity="{{{aliases}}}"\n', "hosts.ini")


# -- expansions ----------------------------------------------------------------------------

HUGE = "h[1:100000000]"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("hosts.ini", f"[gpu]\n{HUGE}\n"),
        ("hosts.yaml", f"all:\n  hosts:\n    {HUGE}:\n"),
        ("hosts.ini", "[gpu]\nr[1:1000]n[1:1000]\n"),  # a product past the cap
    ],
)
def test_a_huge_host_range_in_an_inventory_is_refused_before_it_is_built(
    name: str, text: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text)
    code, err = bounded("-i", str(path), "submit", "--dry-run", "--", "true", cwd=tmp_path)
    assert code == ExitCode.USAGE, err
    assert f"{name}:" in err and "more than 100,000 hosts" in err


def test_a_huge_range_in_limit_or_in_a_playbook_is_refused(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[gpu]\nh[1:4] ansible_connection=local\n")
    state = str(tmp_path / "s.db")
    code, err = bounded(
        "-i", str(inventory), "--state", state, "submit", "--dry-run", "-l", HUGE, "--", "true",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == ExitCode.USAGE and "more than 100,000 hosts" in err, err
    book = tmp_path / "book.yaml"
    book.write_text(f"hosts: '{HUGE}'\nsteps:\n  - probe:\n")
    code, err = bounded(
        "-i", str(inventory), "--state", state, "maintain", "--check", str(book), cwd=tmp_path
    )
    assert code == ExitCode.USAGE and "book.yaml" in err and "100,000" in err, err


def test_a_huge_array_is_refused_before_it_is_built(tmp_path: Path) -> None:
    code, err = bounded(
        "--state", str(tmp_path / "s.db"), "submit", "--dry-run", "--array", "0-999999999",
        "--", "true", cwd=tmp_path,
    )  # fmt: skip
    assert code == ExitCode.USAGE and "--array" in err, err
    batch = tmp_path / "jobs.yaml"
    batch.write_text("jobs:\n" + "".join("  - {command: x, array: 0-99999}\n" for _ in range(3)))
    code, err = bounded(
        "--state", str(tmp_path / "s.db"), "submit", "--dry-run", "--file", str(batch),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == ExitCode.USAGE and "more than 100000 jobs" in err, err


def test_the_caps_are_exact() -> None:
    assert len(expand_host_pattern(f"h[1:{MAX_HOSTS}]")) == MAX_HOSTS
    with pytest.raises(LeptonError, match="more than 100,000"):
        expand_host_pattern(f"h[0:{MAX_HOSTS}]")
    assert len(parse_array(f"1-{MAX_ARRAY_TASKS}")) == MAX_ARRAY_TASKS
    with pytest.raises(UsageError, match="more than 100000"):
        parse_array(f"0-{MAX_ARRAY_TASKS}")
    with pytest.raises(LeptonError, match="more than 100,000 hosts"):
        parse_inventory("[a]\nh[1:60000]\n[b]\ng[1:60000]\n", "hosts.ini")


# -- options that used to end in a traceback ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["submit", "--priority", str(2**64), "--", "true"], "--priority"),
        (["submit", "--retries", str(2**64), "--", "true"], "--retries"),
        (["submit", "--input", "imgs@" + "9" * 30, "--", "true"], "imgs@"),
        (["submit", "--input", "imgs@" + "9" * 5000, "--", "true"], "imgs@"),
        (["submit", "--time", "0:0", "--", "true"], "--time"),
        (["submit", "--time", "9" * 5000 + ":0", "--", "true"], "--time"),
        (["submit", "--time", "99999999999d", "--", "true"], "--time"),
        (["submit", "--workdir", "", "--", "true"], "--workdir"),
        (["submit", "--workdir", "/tmp/a\nb", "--", "true"], "--workdir"),
        (["submit", "--env", "A", "--", "true"], "--env"),
        (["submit", "--after", "9" * 30, "--", "true"], "--after"),
        (["submit", "--array", "0-" + "9" * 5000, "--", "true"], "--array"),
        (["data", "put", "/etc/hostname", "imgs", "--chunk-size", "10XB"], "--chunk-size"),
        (["data", "put", "/etc/hostname", "imgs", "--chunk-size", "2GiB"], "--chunk-size"),
    ],
)
def test_a_bad_option_value_is_a_usage_error_naming_the_option(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = cli(capsys, "--state", str(tmp_path / "s.db"), *argv)
    assert code == ExitCode.USAGE, err
    assert named in err


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ("{A=B: x}", "env"),
        ("{'1X': x}", "env"),
        ("{X: null}", "env.X"),
        ("{X: [1, 2]}", "env.X"),
        ("{X: {a: 1}}", "env.X"),
    ],
)
def test_a_batch_env_must_be_names_to_strings_or_numbers(env: str, field: str) -> None:
    with pytest.raises(UsageError, match=rf"jobs.yaml: entry 0 \({re.escape(field)}\)"):
        parse_batch_text(f"jobs:\n  - {{command: x, env: {env}}}\n", "jobs.yaml")
    (job,) = parse_batch_text("jobs:\n  - {command: x, env: {A: 1, B: true, C: s=t}}\n", "j")
    assert dict(job.env) == {"A": "1", "B": "true", "C": "s=t"}


@pytest.mark.parametrize("field", ["name", "limit", "workdir", "gpu_type", "fpga_type"])
def test_a_batch_text_field_given_a_list_or_mapping_is_refused(field: str) -> None:
    for value in ("[a, b]", "{a: 1}", "true"):
        with pytest.raises(UsageError, match=rf"entry 0 \({field}\): must be a string"):
            parse_batch_text(f"jobs:\n  - {{command: x, {field}: {value}}}\n", "jobs.yaml")


# -- issue 18: the dry run checks what submit checks; inputs; slice -------------------


@pytest.mark.parametrize(
    "entries",
    [
        "  - {name: a, command: x, after: b}\n  - {name: b, command: y}\n",  # a later entry
        "  - {name: a, command: x, after: a}\n",  # itself
        "  - {name: a, command: x, after: 4242}\n",  # no such job
    ],
)
def test_the_dry_run_rejects_an_after_that_submit_rejects(
    entries: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "jobs.yaml"
    batch.write_text("jobs:\n" + entries)
    state = ["--state", str(tmp_path / "s.db")]
    for dry in (["--dry-run"], []):
        code, err = cli(capsys, *state, "submit", *dry, "--file", str(batch))
        assert code == ExitCode.USAGE and "neither a job id nor an earlier job" in err, dry
    code, _out = cli(capsys, *state, "jobs", "--all", "--json")
    assert code == 0


def test_an_after_naming_an_earlier_entry_or_array_passes_the_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "jobs.yaml"
    batch.write_text(
        "jobs:\n  - {name: a, command: x, array: 0-2}\n  - {name: b, command: y, after: a}\n"
    )
    code, err = cli(capsys, "--state", str(tmp_path / "s.db"), "submit", "--dry-run",
                    "--file", str(batch))  # fmt: skip
    assert code == 0, err


def test_two_inputs_that_would_set_one_variable_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = cli(capsys, "--state", str(tmp_path / "s.db"), "submit", "--input",
                    "ok.name-1_2", "--input", "ok-name-1_2", "--", "true")  # fmt: skip
    assert code == ExitCode.USAGE and "LEPTON_INPUT_OK_NAME_1_2" in err
    assert check_inputs(["a", "b:/data/b"]) == ("a", "b:/data/b")


@pytest.mark.parametrize(("written", "value"), [("1/168", 1 / 168), ("'5%'", 0.05), ("0.5", 0.5)])
def test_a_scrub_slice_may_be_written_as_a_fraction(written: str, value: float) -> None:
    book = parse_playbook(f"steps:\n  - scrub:\n      slice: {written}\n", "scrub.yaml")
    assert book.steps[0].args["slice"] == pytest.approx(value)
    for bad in ("1/0", "2/1", ".nan", "'a lot'"):
        with pytest.raises(LeptonError, match=r"scrub\.slice"):
            parse_playbook(f"steps:\n  - scrub:\n      slice: {bad}\n", "scrub.yaml")


def _doc_blocks(first_line: str) -> list[str]:
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if b.lstrip().startswith(first_line)]


def test_the_documented_playbook_and_batch_examples_parse() -> None:
    (book,) = _doc_blocks("name: tidy")
    assert [s.action for s in parse_playbook(book, "tidy.yaml").steps] == [
        "probe", "health", "shell",
    ]  # fmt: skip
    (batch,) = _doc_blocks("jobs:")
    jobs = parse_batch_text(batch, "jobs.yaml")
    assert [j.name for j in jobs][:3] == ["prep", "train", "eval[0]"] and len(jobs) == 12
    scrub = parse_playbook("steps:\n  - scrub:\n      slice: 1/168\n", "scrub.yaml")
    assert scrub.steps[0].args["slice"] == pytest.approx(1 / 168)  # the documented default


# -- hypothesis: a clean error or a result, never a crash --------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

INI_WORDS = st.sampled_from(
    [
        "[gpu]", "[gpu:children]", "[gpu:vars]", "[all:vars]", "[x:hosts]", "[:]", "[a:b]",
        "h[1:3]", "h[01:10:2]", "h[a:f]", "h[1:99999999]", "h:22", "h:0", "h:-1", "[fe80::1]:22",
        "gpu", "cpu", "all", "ansible_host=-oX", "ansible_port=²", "ansible_port=99999",
        "capacity={'gpus': 8}", "capacity='{cpus: [[[[ }'", "user=ops", "a=b=c", "'", '"', "#",
        ";", "=", "x=", "lepton_proxy_jump=a,-b", "ansible_group_priority=" + "9" * 50, "\\",
        "{", "}", "\t", "ü", "\x00", "[", "]",
    ]
)  # fmt: skip
INI_TEXT = st.lists(
    st.lists(st.one_of(INI_WORDS, st.text(max_size=8)), max_size=4).map(" ".join), max_size=12
).map("\n".join)


@FUZZ
@given(INI_TEXT)
def test_fuzz_the_ini_inventory_parser(text: str) -> None:
    with contextlib.suppress(LeptonError):
        parse_inventory(text, "hosts.ini", fmt="ini")


YAML_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=10), st.sampled_from(["-oX", "h[1:3]", "h[1:99999999]", "2026-13-45", "22"]),
)  # fmt: skip
YAML_KEYS = st.sampled_from(
    ["all", "hosts", "children", "vars", "gpu", "h[1:2]", "h1:22", "ansible_host", "ansible_port",
     "capacity", "gpus", "ansible_user", "lepton_proxy_jump", "data_address", "<<", "x"]
)  # fmt: skip
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(YAML_KEYS, inner, max_size=4)
    ),
    max_leaves=20,
)


def _as_yaml(value: object) -> str:
    import json

    return json.dumps(value, default=str)  # JSON is YAML


@FUZZ
@given(st.one_of(YAML_VALUES.map(_as_yaml), st.text(max_size=200)))
def test_fuzz_the_yaml_inventory_parser(text: str) -> None:
    with contextlib.suppress(LeptonError):
        parse_inventory(text, "hosts.yaml", fmt="yaml")


PLAYBOOK_VALUES = st.recursive(
    st.one_of(YAML_SCALARS, st.sampled_from(["probe", "scrub", "shell", "1/168", "20GiB", "5m"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "hosts",
                    "steps",
                    "probe",
                    "health",
                    "scrub",
                    "slice",
                    "shell",
                    "command",
                    "on_error",
                    "gc",
                    "days",
                    "min_disk_free",
                    "timeout",
                    "drain",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


@FUZZ
@given(st.one_of(PLAYBOOK_VALUES.map(_as_yaml), st.text(max_size=200)))
def test_fuzz_the_playbook_parser(text: str) -> None:
    with contextlib.suppress(LeptonError):
        parse_playbook(text, "book.yaml")


BATCH_VALUES = st.recursive(
    st.one_of(YAML_SCALARS, st.sampled_from(["0-3", "0-99999999", "1:0:0", "x", "16GiB"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "jobs",
                    "name",
                    "command",
                    "cpus",
                    "mem",
                    "gpus",
                    "priority",
                    "time",
                    "env",
                    "workdir",
                    "retries",
                    "after",
                    "limit",
                    "est",
                    "array",
                    "A",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


@FUZZ
@given(st.one_of(BATCH_VALUES.map(_as_yaml), st.text(max_size=200)), BATCH_VALUES)
def test_fuzz_the_batch_parser(text: str, document: object) -> None:
    with contextlib.suppress(LeptonError):
        parse_batch_text(text, "jobs.yaml")
    with contextlib.suppress(LeptonError):
        parse_batch({"jobs": [document]}, "jobs.yaml")


LIMIT_INVENTORY = parse_inventory(
    "[gpu]\ngpu[01:04]\n[cpu]\ncpu[1:3]\n[all:children]\ngpu\ncpu\n", "hosts.ini"
)
LIMIT_WORDS = st.sampled_from(
    ["gpu", "cpu", "all", "*", "gpu01", "gpu[01:02]", "gpu[0]", "gpu[-1]", "gpu[1:]", "!gpu",
     "&cpu", "~gpu0[12]", "~(", "gpu[" + "9" * 30 + "]", "h[1:99999999]", ",", ":", "[", "]",
     "gpu?", "cpu[1:3:0]", "fe80::1"]
)  # fmt: skip


@FUZZ
@given(
    st.one_of(
        st.lists(st.one_of(LIMIT_WORDS, st.text(max_size=6)), max_size=5).map("".join),
        st.lists(LIMIT_WORDS, max_size=5).map(",".join),
    )
)
def test_fuzz_limit_selectors(limit: str) -> None:
    with contextlib.suppress(LeptonError):
        select_hosts(LIMIT_INVENTORY, limit)
