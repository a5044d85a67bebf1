"""Playbooks on plain data: the schema, errors that name file/step/field, and planning."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from leptonctl.core.playbook import (
    ACTIONS,
    about,
    describe_step,
    parse_playbook,
    plan_run,
)
from leptonctl.errors import ExitCode, PlaybookError
from leptonctl.inventory import parse_inventory

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"

INVENTORY = parse_inventory(
    """
all:
  children:
    gpu:
      hosts:
        g1:
        g2:
    cpu:
      hosts:
        c1:
        c2:
""",
    "inv.yaml",
)


def test_a_minimal_playbook_gets_its_name_from_the_file_and_every_default() -> None:
    book = parse_playbook("steps:\n  - probe:\n  - gc: {days: 3}\n", "books/weekly.yaml")
    assert (book.name, book.hosts, book.source) == ("weekly", "all", "books/weekly.yaml")
    probe, gc = book.steps
    assert (probe.index, probe.action, probe.on_error, probe.hosts) == (1, "probe", "stop", None)
    assert probe.args == {"memory_tolerance_pct": 1.0}
    assert (gc.index, gc.args["days"], gc.args["chunks"]) == (2, 3.0, False)
    assert (probe.line, gc.line) == (2, 3)


def test_step_keys_and_argument_kinds_are_read() -> None:
    book = parse_playbook(
        """
name: tidy
hosts: [gpu, cpu]
steps:
  - name: sick nodes out
    health: {min_disk_free: 20GiB, drain_unhealthy: true, max_gpu_temperature_c: 85}
    hosts: gpu
    on_error: continue
  - drain: {wait: true, timeout: 15m}
  - shell: mkdir -p /scratch
""",
        "tidy.yaml",
    )
    health, drain, shell = book.steps
    assert book.hosts == "gpu,cpu"
    assert (health.name, health.hosts, health.on_error) == ("sick nodes out", "gpu", "continue")
    assert health.args["min_disk_free"] == 20 * 1024**3
    assert health.args["drain_unhealthy"] is True and health.args["agent_version"] is None
    assert drain.args == {"reason": "drained by playbook", "wait": True, "timeout": 900.0}
    assert shell.args == {"command": "mkdir -p /scratch", "creates": None, "timeout": None}


def test_every_shipped_playbook_parses_and_is_documented_at_its_top() -> None:
    names = {"health", "dispatch", "scrub", "nightly"}
    assert names <= {p.stem for p in PLAYBOOKS.glob("*.yaml")}
    for name in sorted(names):
        text = (PLAYBOOKS / f"{name}.yaml").read_text()
        assert text.startswith("# ") and about(text), name
        assert sum(1 for line in text.splitlines() if line.startswith("#")) >= 5, name
        assert parse_playbook(text, f"{name}.yaml").name == name
    nightly = parse_playbook((PLAYBOOKS / "nightly.yaml").read_text(), "nightly.yaml")
    assert [s.action for s in nightly.steps] == ["probe", "health", "repair", "gc"]


@pytest.mark.parametrize(
    ("text", "step", "field", "words"),
    [
        ("steps:\n  - probe:\n  - helth: {}\n", 2, "helth", "did you mean health"),
        ("steps:\n  - health: {max_temp: 80}\n", 1, "health.max_temp", "unknown argument"),
        ("steps:\n  - health: {min_disk_free: lots}\n", 1, "health.min_disk_free", "size"),
        ("steps:\n  - gc: {days: -1}\n", 1, "gc.days", "at least 0"),
        ("steps:\n  - gc: {chunks: 'yes'}\n", 1, "gc.chunks", "true or false"),
        ("steps:\n  - probe:\n    on_error: ignore\n", 1, "on_error", "stop, continue"),
        ("steps:\n  - shell: {creates: /x}\n", 1, "shell.command", "required"),
        ("steps:\n  - probe:\n    hosts: 3\n", 1, "hosts", "host selector"),
        ("steps:\n  - scrub: {slice: 2}\n", 1, "scrub.slice", "fraction"),
        ("steps:\n  - drain: {timeout: soon}\n", 1, "drain.timeout", "duration"),
        ("steps:\n  - probe:\n    gc:\n", 1, None, "more than one action"),
        ("steps:\n  - name: nothing\n", 1, None, "no action"),
        ("steps:\n  - [probe]\n", 1, None, "expected a mapping"),
        ("steps:\n  - gc: 3\n", 1, "gc", "must be a mapping"),
    ],
)
def test_step_errors_name_the_file_the_step_and_the_field(
    text: str, step: int, field: str | None, words: str
) -> None:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, "books/x.yaml")
    error = caught.value
    assert (error.source, error.step, error.field) == ("books/x.yaml", step, field)
    assert str(error).startswith(f"books/x.yaml:{error.line}: step {step}")
    if field is not None:
        assert f"({field})" in str(error)
    assert words in f"{error.detail} {error.hint or ''}"
    assert error.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("- probe\n", None, "mapping with a `steps:` list"),
        ("steps: []\n", "steps", "non-empty list"),
        ("name: x\nsteps:\n  - probe:\ntasks: []\n", "tasks", "unknown key"),
        ("name: ''\nsteps:\n  - probe:\n", "name", "non-empty string"),
    ],
)
def test_playbook_errors_name_the_file_and_the_field(
    text: str, field: str | None, words: str
) -> None:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, "p.yaml")
    assert (caught.value.step, caught.value.field) == (None, field)
    assert words in str(caught.value) and str(caught.value).startswith("p.yaml")


def test_broken_yaml_is_reported_with_its_line() -> None:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook("steps:\n  - probe:\n  - gc: {days: [\n", "p.yaml")
    assert caught.value.line is not None and caught.value.line >= 3
    assert str(caught.value).startswith(f"p.yaml:{caught.value.line}: not valid YAML")


_SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text("abc:[]{}-#", max_size=6)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from([*ACTIONS, "hosts", "on_error", "name", "x"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "hosts", "steps", "other"]), _VALUES, max_size=3))
def test_any_document_parses_or_fails_with_a_playbook_error(document: dict) -> None:
    try:
        book = parse_playbook(yaml.safe_dump(document), "fuzz.yaml")
    except PlaybookError as error:
        assert str(error).startswith("fuzz.yaml")
    else:
        assert book.steps and all(s.action in ACTIONS for s in book.steps)


# -- planning ------------------------------------------------------------------------


def test_a_step_runs_on_the_playbook_hosts_narrowed_by_its_own_and_by_the_limit() -> None:
    book = parse_playbook(
        "hosts: 'all:!c2'\nsteps:\n  - probe:\n  - health:\n    hosts: gpu\n  - resume:\n"
        "    hosts: c2\n",
        "b.yaml",
    )
    probe, health, resume = plan_run([book], INVENTORY)
    assert probe.hosts == ("g1", "g2", "c1")  # inventory order
    assert health.hosts == ("g1", "g2")
    assert resume.hosts == ()  # c2 is outside the playbook's hosts
    limited = plan_run([book], INVENTORY, limit="g2,c1")
    assert [p.hosts for p in limited] == [("g2", "c1"), ("g2",), ()]
    assert (probe.playbook, probe.source, health.label) == ("b", "b.yaml", "health")


def test_a_selector_that_matches_nothing_fails_the_plan_naming_the_step() -> None:
    book = parse_playbook("steps:\n  - probe:\n  - gc:\n    hosts: tpu\n", "b.yaml")
    with pytest.raises(PlaybookError) as caught:
        plan_run([book], INVENTORY)
    assert (caught.value.step, caught.value.field, caught.value.line) == (2, "hosts", 3)
    assert "tpu" in str(caught.value)
    bad_play = parse_playbook("hosts: nowhere\nsteps:\n  - probe:\n", "c.yaml")
    with pytest.raises(PlaybookError, match=r"^c\.yaml \(hosts\)"):
        plan_run([bad_play], INVENTORY)


def test_steps_describe_what_they_would_do() -> None:
    book = parse_playbook(
        """
steps:
  - health: {drain_unhealthy: true}
  - drain: {wait: true, timeout: 60, reason: fans}
  - shell: {command: touch /tmp/x, creates: /tmp/x}
  - gc: {days: 7, chunks: true}
  - scrub: {slice: 0.1}
""",
        "d.yaml",
    )
    texts = [describe_step(step, ["g1", "g2"]) for step in book.steps]
    assert (
        texts[0]
        == "check the health of 2 hosts (g[1:2]); drain failing hosts, resume recovered ones"
    )
    assert texts[1] == "drain 2 hosts (g[1:2]) (fans), wait up to 60 s for their jobs"
    assert texts[2] == "run `touch /tmp/x` on 2 hosts (g[1:2]) unless /tmp/x exists"
    assert "ended over 7 days ago and orphan chunks" in texts[3]
    assert texts[4] == "scrub on 2 hosts (g[1:2]) (slice=0.1)"
