"""Reading an inventory: format detection, adjacent vars files, the default.

:func:`parse_inventory` is pure (text in, :class:`Inventory` out);
:func:`load_inventory` reads the file, plus Ansible's ``group_vars/`` and
``host_vars/`` next to it: for a group or host ``NAME`` these are
``group_vars/NAME.yml``, ``.yaml``, ``.json``, ``group_vars/NAME`` (a file), or
every ``*.yml``/``*.yaml``/``*.json``/extension-less file below a
``group_vars/NAME/`` directory, in sorted order.  Files encrypted whole with
ansible-vault are skipped with a warning (leptonctl cannot decrypt them).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from leptonctl.errors import InventoryError
from leptonctl.inventory.build import build_inventory
from leptonctl.inventory.ini_format import parse_ini_inventory
from leptonctl.inventory.model import Host, Inventory
from leptonctl.inventory.raw import RawInventory, VarSet

__all__ = [
    "DEFAULT_SOURCE",
    "default_inventory",
    "detect_format",
    "load_inventory",
    "parse_inventory",
]

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "<embedded default>"
Format = Literal["yaml", "ini"]

_YAML_SUFFIXES = (".yaml", ".yml", ".json")
_VARS_SUFFIXES = (".yml", ".yaml", ".json", "")
_YAML_KEY = re.compile(r"""^(?:"[^"]*"|'[^']*'|[^\s=#;'"\[][^\s=]*?)\s*:(?:\s|$)""")
_VAULT_HEADER = "$ANSIBLE_VAULT;"


def detect_format(name: str, text: str) -> Format:
    """``yaml`` for ``.yaml``/``.yml``/``.json`` names, else decided by content.

    The first line that is not blank or a comment decides: ``---``, ``{``, a
    ``%`` directive or a ``key:`` mapping line mean YAML; anything else (a
    ``[section]``, a host line, ``host:port``) means INI.
    """
    if Path(name).suffix.lower() in _YAML_SUFFIXES:
        return "yaml"
    for text_line in text.splitlines():
        line = text_line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith(("---", "{", "%")) or _YAML_KEY.match(line):
            return "yaml"
        return "ini"
    return "yaml"


def _parse_raw(text: str, source: str, fmt: Format | None) -> RawInventory:
    fmt = fmt or detect_format(source, text)
    if fmt == "ini":
        return parse_ini_inventory(text, source)
    from leptonctl.inventory.yaml_format import parse_yaml_inventory  # PyYAML: only here

    return parse_yaml_inventory(text, source)


def parse_inventory(text: str, source: str = "<string>", *, fmt: Format | None = None) -> Inventory:
    """Parse inventory text; ``source`` names it in errors (and guides detection)."""
    return build_inventory(_parse_raw(text, source, fmt))


def load_inventory(path: str | os.PathLike[str] | None) -> Inventory:
    """Read the inventory at ``path``; ``None`` gives :func:`default_inventory`."""
    if path is None:
        return default_inventory()
    source = os.fspath(path)
    file = Path(source)
    hint = "pass an existing inventory file with --inventory (see inventory/local.yaml)"
    if not file.exists():
        raise InventoryError("inventory file not found", source=source, hint=hint)
    if file.is_dir():
        raise InventoryError(
            "is a directory, expected an inventory file",
            source=source,
            hint="point at the inventory file inside it (e.g. hosts.yaml)",
        )
    text = _read(file, source)
    raw = _parse_raw(text, source, None)
    base = file.parent
    group_vars = {g: _vars_files(base / "group_vars", g) for g in raw.groups}
    host_vars = {h: _vars_files(base / "host_vars", h) for h in raw.hosts}
    return build_inventory(
        raw,
        group_vars={k: v for k, v in group_vars.items() if v},
        host_vars={k: v for k, v in host_vars.items() if v},
    )


def _read(file: Path, source: str) -> str:
    from leptonctl.core.safeyaml import YamlLimitError, read_bounded_text

    try:
        return read_bounded_text(file)
    except YamlLimitError as exc:
        raise InventoryError(str(exc.problem), source=source) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise InventoryError(
            f"not UTF-8 text ({exc.reason})",
            source=source,
            line=line,
            hint="save the file as UTF-8",
        ) from None
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", source=source) from None


def _vars_files(directory: Path, name: str) -> list[VarSet]:
    if not directory.is_dir():
        return []
    candidates: list[Path] = []
    folder = directory / name
    if folder.is_dir():
        candidates += sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _VARS_SUFFIXES
        )
    candidates += [
        directory / f"{name}{suffix}"
        for suffix in _VARS_SUFFIXES
        if (directory / f"{name}{suffix}").is_file()
    ]
    from leptonctl.inventory.yaml_format import parse_yaml_vars

    sets: list[VarSet] = []
    for candidate in candidates:
        text = _read(candidate, str(candidate))
        if text.lstrip().startswith(_VAULT_HEADER):
            log.warning("skipping %s: encrypted with ansible-vault", candidate)
            continue
        sets.append(parse_yaml_vars(text, str(candidate)))
    return sets


def default_inventory() -> Inventory:
    """The inventory used without ``--inventory``: this machine, run locally."""
    host = Host(
        name="localhost",
        address=None,
        port=None,
        user=None,
        identity_file=None,
        connection="local",
        python="python3",
        data_dir=None,
        groups=("all", "ungrouped"),
        vars=MappingProxyType({"ansible_connection": "local"}),
        capacity=None,
        source=DEFAULT_SOURCE,
    )
    return Inventory(
        source=DEFAULT_SOURCE,
        hosts=(host,),
        groups=MappingProxyType({"all": ("localhost",), "ungrouped": ("localhost",)}),
    )
