"""Playbooks: the schema, the action catalogue, and the plan ``maintain --check`` prints.

A playbook is a YAML file::

    name: nightly              # default: the file name without .yaml
    hosts: all                 # a --limit style selector, default all
    steps:
      - probe:                 # one action per step, with its arguments
      - health:
          min_disk_free: 20GiB
          drain_unhealthy: true
        on_error: continue     # or stop (the default): skip the playbook's later steps
      - shell:
          command: mkdir -p /scratch/tmp
          creates: /scratch/tmp
        hosts: gpu             # narrows the playbook's hosts for this step
        name: scratch dir      # a label for the output

Everything here is pure: text in, data out.  Errors are ``PlaybookError`` naming
the file (and line), the step (counted from 1) and the field.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from leptonctl.core.jobspec import parse_duration
from leptonctl.errors import LimitError, PlaybookError, UsageError
from leptonctl.inventory import Inventory, fold_host_names, parse_size, select_hosts

if TYPE_CHECKING:
    import yaml

ON_ERROR = ("stop", "continue")
STEP_KEYS = ("name", "hosts", "on_error")
PLAYBOOK_KEYS = ("name", "hosts", "steps")
GIB = 1024**3


# -- the action catalogue ------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument of an action: its kind (how a YAML value is read) and default."""

    kind: str  # bool | int | float | str | size | duration | fraction
    default: Any = None
    required: bool = False
    minimum: float | None = None
    help: str = ""


@dataclass(frozen=True)
class ActionSpec:
    help: str
    args: Mapping[str, Arg] = field(default_factory=dict)
    free_form: str | None = None  # `- shell: echo hi` means `- shell: {command: echo hi}`


ACTIONS: Mapping[str, ActionSpec] = MappingProxyType(
    {
        "probe": ActionSpec(
            "refresh facts; record hardware changes since the last probe as events",
            {"memory_tolerance_pct": Arg("float", 1.0, minimum=0, help="ignore smaller changes")},
        ),
        "health": ActionSpec(
            "check NVML, GPU ECC/temperature/power, data disk free space, agent version",
            {
                "max_gpu_temperature_c": Arg("float", 90.0, minimum=0),
                "max_power_pct": Arg("float", 105.0, minimum=0, help="of the GPU's power limit"),
                "max_ecc_uncorrected": Arg("int", 0, minimum=0),
                "min_disk_free": Arg("size", GIB, help="free space in the agent's data dir"),
                "agent_version": Arg("str", None, help="default: the bundled agent's version"),
                "drain_unhealthy": Arg("bool", False, help="drain failing hosts, resume them"),
            },
        ),
        "dispatch": ActionSpec(
            "one reconcile pass: collect ended jobs, requeue lost ones, start what fits",
            {"node_fail_after": Arg("duration", 120.0, help="unreachable this long: NODE_FAIL")},
        ),
        "gc": ActionSpec(
            "remove finished job directories (and their logs) older than N days",
            {
                "days": Arg("float", 14.0, minimum=0),
                "chunks": Arg("bool", False, help="also remove orphan chunks"),
            },
        ),
        "drain": ActionSpec(
            "schedule nothing new on the hosts; optionally wait for their jobs",
            {
                "reason": Arg("str", "drained by playbook"),
                "wait": Arg("bool", False),
                "timeout": Arg("duration", 600.0, help="how long `wait` waits"),
            },
        ),
        "resume": ActionSpec("let the scheduler use the hosts again"),
        "shell": ActionSpec(
            "run a command on the hosts; skipped where the `creates` path exists",
            {
                "command": Arg("str", required=True),
                "creates": Arg("str", None, help="skip a host where this path exists"),
                "timeout": Arg("duration", None, help="default: --timeout"),
            },
            free_form="command",
        ),
        "scrub": ActionSpec(
            "verify a slice of the stored chunk replicas against their hashes",
            {
                "slice": Arg("fraction", None, help="share of all replicas checked per run"),
                "replicas_per_run": Arg("int", None, minimum=1),
                "dataset": Arg("str", None),
            },
        ),
        "repair": ActionSpec(
            "delete corrupt replicas and re-replicate chunks that lack replicas",
            {"dataset": Arg("str", None)},
        ),
        "rebalance": ActionSpec(
            "move replicas towards an even spread of disk use, never below K",
            {"tolerance": Arg("fraction", 0.05, help="acceptable spread of disk use")},
        ),
    }
)


# -- the schema --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    index: int  # counted from 1, as errors and output name it
    action: str
    args: Mapping[str, Any]  # every argument of the action, defaults filled in
    hosts: str | None  # narrows the playbook's hosts; None: all of them
    on_error: str  # "stop" | "continue"
    name: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Playbook:
    name: str
    hosts: str
    steps: tuple[Step, ...]
    source: str


def parse_playbook(text: str, source: str) -> Playbook:
    """Read one playbook; ``PlaybookError`` names the file, step and field of a mistake."""
    import yaml  # imported by the commands that read a playbook

    from leptonctl.core.safeyaml import YamlLimitError, compose_yaml, construct_yaml

    try:
        root = compose_yaml(text)
        document = construct_yaml(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        if isinstance(exc, yaml.MarkedYAMLError):
            what = ": ".join(str(p) for p in (exc.context, exc.problem) if p) or str(exc)
        else:
            what = str(exc)
        kind = "refused" if isinstance(exc, YamlLimitError) else "not valid YAML"
        hint = exc.note if isinstance(exc, yaml.MarkedYAMLError) else None
        raise PlaybookError(f"{kind}: {what}", source=source, line=line, hint=hint) from None
    if not isinstance(document, Mapping):
        raise PlaybookError("expected a mapping with a `steps:` list", source=source)
    unknown = [k for k in document if k not in PLAYBOOK_KEYS]
    if unknown:
        raise PlaybookError(
            f"unknown key (known: {', '.join(PLAYBOOK_KEYS)})", source=source, field=str(unknown[0])
        )
    name = document.get("name", _stem(source))
    if not isinstance(name, str) or not name.strip():
        raise PlaybookError("must be a non-empty string", source=source, field="name")
    hosts = _selector(
        document.get("hosts", "all"),
        lambda message: PlaybookError(message, source=source, field="hosts"),
    )
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps:
        raise PlaybookError("must be a non-empty list of steps", source=source, field="steps")
    lines = _step_lines(root)
    parsed = tuple(
        _step(entry, i + 1, source, lines[i] if i < len(lines) else None)
        for i, entry in enumerate(steps)
    )
    return Playbook(name.strip(), hosts or "all", parsed, source)


def _step(entry: Any, index: int, source: str, line: int | None) -> Step:
    def error(message: str, key: str | None = None, hint: str | None = None) -> PlaybookError:
        return PlaybookError(message, source=source, step=index, field=key, line=line, hint=hint)

    if isinstance(entry, str) and entry in ACTIONS:  # `- probe` alone
        entry = {entry: None}
    if not isinstance(entry, Mapping):
        raise error("expected a mapping with one action, e.g. `- probe:`")
    actions = [k for k in entry if k not in STEP_KEYS]
    for key in actions:
        if key not in ACTIONS:
            close = difflib.get_close_matches(str(key), [*ACTIONS, *STEP_KEYS], n=1)
            raise error(
                f"unknown action or key (actions: {', '.join(ACTIONS)}; "
                f"step keys: {', '.join(STEP_KEYS)})",
                str(key),
                f"did you mean {close[0]}?" if close else None,
            )
    if len(actions) != 1:
        what = "no action" if not actions else f"more than one action ({', '.join(actions)})"
        raise error(f"{what}: a step has exactly one of {', '.join(ACTIONS)}")
    action = str(actions[0])
    on_error = entry.get("on_error", "stop")
    if on_error not in ON_ERROR:
        raise error(f"must be one of {', '.join(ON_ERROR)}, got {on_error!r}", "on_error")
    label = entry.get("name")
    if label is not None and not isinstance(label, str):
        raise error("must be a string", "name")
    hosts = _selector(entry.get("hosts"), lambda m: error(m, "hosts"))
    args = resolve_args(action, entry[action], lambda m, key: error(m, key))
    return Step(index, action, args, hosts, str(on_error), label, line)


def resolve_args(
    action: str, given: Any, error: Callable[[str, str], Exception]
) -> Mapping[str, Any]:
    """The action's arguments read from YAML, with defaults; ``error(message, field)``."""
    spec = ACTIONS[action]
    if given is None:
        given = {}
    elif not isinstance(given, Mapping) and spec.free_form is not None:
        given = {spec.free_form: given}
    if not isinstance(given, Mapping):
        raise error(f"the arguments must be a mapping, got {given!r}", action)
    resolved: dict[str, Any] = {}
    for key in given:
        if key not in spec.args:
            known = ", ".join(spec.args) or "none"
            raise error(f"unknown argument (known: {known})", f"{action}.{key}")
    for key, arg in spec.args.items():
        if key not in given or given[key] is None:
            if arg.required:
                raise error("is required", f"{action}.{key}")
            resolved[key] = arg.default
            continue
        try:
            resolved[key] = read_arg(arg, given[key])
        except (ValueError, UsageError) as exc:
            raise error(str(exc), f"{action}.{key}") from None
    return MappingProxyType(resolved)


def read_arg(arg: Arg, value: Any) -> Any:
    """One YAML value as ``arg.kind`` says; ``ValueError`` with what is wrong."""
    if arg.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value
    if arg.kind == "str":
        if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value):
            raise ValueError(f"must be a non-empty string, got {value!r}")
        return str(value)
    if arg.kind == "size":
        return parse_size(value)
    if arg.kind == "duration":
        if isinstance(value, bool):
            raise ValueError(f"must be a duration (90s, 15m, 2h), got {value!r}")
        return parse_duration(str(value), "duration")
    if arg.kind == "fraction" and isinstance(value, str):
        value = _fraction(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    if arg.kind == "int" and not isinstance(value, int):
        raise ValueError(f"must be a whole number, got {value!r}")
    if arg.minimum is not None and value < arg.minimum:
        raise ValueError(f"must be at least {arg.minimum:g}, got {value!r}")
    if arg.kind == "fraction" and not 0 < value <= 1:
        raise ValueError(f"must be a fraction in (0, 1], got {value!r}")
    return float(value) if arg.kind in ("float", "fraction") else value


_FRACTION = re.compile(r"^\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*(?:/\s*([0-9]{1,9})\s*|(%))?$")


def _fraction(text: str) -> float:
    """``"1/168"``, ``"0.05"`` or ``"5%"`` as a number (checked against (0, 1] later)."""
    match = _FRACTION.match(text)
    if match is None:
        raise ValueError(f"must be a fraction such as 0.05, 1/168 or 5%, got {text!r}")
    number, denominator, percent = match.groups()
    if denominator is not None:
        if int(denominator) == 0:
            raise ValueError(f"must be a fraction such as 0.05, 1/168 or 5%, got {text!r}")
        return float(number) / int(denominator)
    return float(number) / 100 if percent else float(number)


def _selector(value: Any, error: Callable[[str], PlaybookError]) -> str | None:
    if value is None:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise error(f"must be a host selector (a string or a list of strings), got {value!r}")


def _step_lines(root: yaml.Node | None) -> list[int]:
    """The line of each step (best effort: [] where the YAML has no steps list)."""
    import yaml

    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "steps" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _stem(source: str) -> str:
    name = source.rsplit("/", 1)[-1]
    for suffix in (".yaml", ".yml"):
        name = name.removesuffix(suffix)
    return name or "playbook"


# -- planning ------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedStep:
    """One step bound to its hosts: what ``maintain`` runs, and ``--check`` shows."""

    playbook: str
    source: str
    step: Step
    hosts: tuple[str, ...]  # inventory order

    @property
    def action(self) -> str:
        return self.step.action

    @property
    def label(self) -> str:
        return self.step.name or self.step.action

    def describe(self) -> str:
        return describe_step(self.step, self.hosts)


def plan_run(
    playbooks: Sequence[Playbook], inventory: Inventory, limit: str | None = None
) -> list[PlannedStep]:
    """Bind every step to its hosts: playbook ``hosts`` ∩ step ``hosts`` ∩ ``limit``.

    A selector that names nothing in the inventory is an error naming the playbook,
    step and field, raised before anything runs.
    """
    allowed = None if limit is None else set(_select(inventory, limit))
    planned: list[PlannedStep] = []
    for book in playbooks:
        try:
            play_hosts = _select(inventory, book.hosts)
        except LimitError as exc:
            raise PlaybookError(exc.message, source=book.source, field="hosts") from None
        for step in book.steps:
            hosts = play_hosts
            if step.hosts is not None:
                try:
                    narrowed = set(_select(inventory, step.hosts))
                except LimitError as exc:
                    raise _hosts_error(exc, book, step) from None
                hosts = [h for h in hosts if h in narrowed]
            if allowed is not None:
                hosts = [h for h in hosts if h in allowed]
            planned.append(PlannedStep(book.name, book.source, step, tuple(hosts)))
    return planned


def _hosts_error(error: LimitError, book: Playbook, step: Step) -> PlaybookError:
    return PlaybookError(
        error.message, source=book.source, step=step.index, field="hosts", line=step.line
    )


def _select(inventory: Inventory, selector: str) -> list[str]:
    return [h.name for h in select_hosts(inventory, selector)]


def describe_step(step: Step, hosts: Sequence[str]) -> str:
    """What the step does, in words (``--check`` prints this)."""
    on = f"{len(hosts)} host{'s' if len(hosts) != 1 else ''} ({fold_host_names(hosts) or '-'})"
    args = step.args
    if step.action == "probe":
        return f"probe {on}; record hardware changes as events"
    if step.action == "health":
        then = "; drain failing hosts, resume recovered ones" if args["drain_unhealthy"] else ""
        return f"check the health of {on}{then}"
    if step.action == "dispatch":
        return f"reconcile jobs on {on}: collect ended, requeue lost, start pending"
    if step.action == "gc":
        chunks = " and orphan chunks" if args["chunks"] else ""
        return f"remove job directories ended over {args['days']:g} days ago{chunks} on {on}"
    if step.action == "drain":
        wait = f", wait up to {args['timeout']:g} s for their jobs" if args["wait"] else ""
        return f"drain {on} ({args['reason']}){wait}"
    if step.action == "resume":
        return f"resume {on}"
    if step.action == "shell":
        guard = f" unless {args['creates']} exists" if args["creates"] else ""
        return f"run `{args['command']}` on {on}{guard}"
    chosen = ", ".join(f"{k}={v}" for k, v in args.items() if v is not None)
    return f"{step.action} on {on}" + (f" ({chosen})" if chosen else "")


def about(text: str) -> str:
    """The first line of a playbook's leading comment block: its one-line description."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        content = stripped.lstrip("#").strip()
        if content:
            return content
    return ""
