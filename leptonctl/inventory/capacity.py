"""The ``capacity:`` host variable and size strings.

``capacity`` declares what a host may be given, overriding or limiting what
its agent reports::

    capacity:
      cpus: 8
      memory: 64GiB            # alias of memory_bytes
      gpus: {count: 2, model: H100, memory: 80GiB}   # or just `gpus: 2`
      fpgas: 1
      disk: 2TiB               # alias of disk_bytes

Keys: ``cpus``, ``memory``/``memory_bytes``, ``gpus`` (an int, or a mapping with
``count``, ``model``, ``memory``/``memory_bytes``), ``gpu_model``,
``gpu_memory``/``gpu_memory_bytes``, ``fpgas``, ``disk``/``disk_bytes``.
The value may also be a string holding a YAML flow mapping (``"{cpus: 8}"``),
which is how it arrives from an INI inventory.

Sizes (:func:`parse_size`) are an integer number of bytes or a string
``<number>[unit]`` where the number may have a fraction and the unit is one of
``B``, ``K``, ``M``, ``G``, ``T``, ``P``, ``E``, optionally followed by ``B`` or
``iB``, case-insensitive.  **All units are binary** (powers of 1024):
``64GiB`` == ``64G`` == ``64GB`` == 64 * 2**30 bytes.  Fractions are rounded to
the nearest byte (``1.5T`` == 1649267441664).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from leptonctl.inventory.model import DeclaredCapacity

__all__ = ["CapacityValueError", "parse_capacity", "parse_size"]

_UNITS = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtpe])(?:i?b)?|(b))?\s*$", re.I)

CAPACITY_KEYS = (
    "cpus",
    "memory",
    "memory_bytes",
    "gpus",
    "gpu_model",
    "gpu_memory",
    "gpu_memory_bytes",
    "fpgas",
    "disk",
    "disk_bytes",
)
_GPU_KEYS = ("count", "model", "memory", "memory_bytes")


class CapacityValueError(ValueError):
    """A bad ``capacity`` value; ``key`` is the dotted path below ``capacity``."""

    def __init__(self, key: str | None, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.hint = hint


def parse_size(value: object) -> int:
    """Bytes from an int or a size string such as ``"64GiB"``, ``"512M"``, ``"1.5T"``.

    Raises :class:`ValueError` for anything else (negative, bool, float, junk).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 64GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            number, unit, plain_b = match.groups()
            power = _UNITS[(unit or plain_b or "").lower()]
            try:
                amount = Decimal(number) * (Decimal(1024) ** power)
            except InvalidOperation:  # pragma: no cover - the regex prevents it
                pass
            else:
                return int(amount.to_integral_value(rounding=ROUND_HALF_EVEN))
    raise ValueError(f"expected a size such as 64GiB, 512M or 1.5T, got {value!r}")


def _count(value: object, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CapacityValueError(key, f"expected an integer, got {_describe(value)}")
    if value < minimum:
        raise CapacityValueError(key, f"must be at least {minimum}, got {value}")
    return value


def _size(value: object, key: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise CapacityValueError(
            key, str(exc), hint="sizes use binary units: 512M, 64GiB, 1.5T"
        ) from None


def _text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CapacityValueError(key, f"expected a non-empty string, got {_describe(value)}")
    return value.strip()


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _one_of(data: Mapping[str, Any], *keys: str) -> tuple[str, Any] | None:
    present = [k for k in keys if k in data]
    if len(present) > 1:
        raise CapacityValueError(
            present[1], f"{' and '.join(present)} are the same setting; give only one"
        )
    return (present[0], data[present[0]]) if present else None


def parse_capacity(value: object) -> DeclaredCapacity | None:
    """Parse a ``capacity`` variable.  ``None`` gives ``None``.

    Raises :class:`CapacityValueError` whose ``key`` names the offending entry
    (``"memory"``, ``"gpus.count"``, ...; ``None`` for the value as a whole).
    """
    if value is None:
        return None
    if isinstance(value, str):
        import yaml  # only an inventory that declares capacity as a string reads YAML

        from leptonctl.core.safeyaml import load_yaml

        try:
            value = load_yaml(value)
        except yaml.YAMLError as exc:
            raise CapacityValueError(
                None,
                f"cannot read the capacity string as a YAML mapping: {exc}",
                hint='write it as capacity="{cpus: 8, memory: 64GiB}"',
            ) from None
        if value is None:
            return None
    if not isinstance(value, Mapping):
        raise CapacityValueError(
            None,
            f"expected a mapping such as {{cpus: 8, memory: 64GiB}}, got {_describe(value)}",
        )
    data: dict[str, Any] = {}
    for raw_key, item in value.items():
        key = str(raw_key)
        if key not in CAPACITY_KEYS:
            raise CapacityValueError(
                key,
                f"unknown capacity key {key!r}",
                hint="known keys: cpus, memory, gpus, gpu_model, gpu_memory, fpgas, disk",
            )
        data[key] = item

    fields: dict[str, Any] = {}
    if "cpus" in data and data["cpus"] is not None:
        fields["cpus"] = _count(data["cpus"], "cpus", minimum=1)
    if (found := _one_of(data, "memory", "memory_bytes")) and found[1] is not None:
        fields["memory_bytes"] = _size(found[1], found[0])
    if (found := _one_of(data, "disk", "disk_bytes")) and found[1] is not None:
        fields["disk_bytes"] = _size(found[1], found[0])
    if "fpgas" in data and data["fpgas"] is not None:
        fields["fpgas"] = _count(data["fpgas"], "fpgas")
    if "gpu_model" in data and data["gpu_model"] is not None:
        fields["gpu_model"] = _text(data["gpu_model"], "gpu_model")
    if (found := _one_of(data, "gpu_memory", "gpu_memory_bytes")) and found[1] is not None:
        fields["gpu_memory_bytes"] = _size(found[1], found[0])

    gpus = data.get("gpus")
    if isinstance(gpus, Mapping):
        for raw_key in gpus:
            if str(raw_key) not in _GPU_KEYS:
                raise CapacityValueError(
                    f"gpus.{raw_key}",
                    f"unknown gpus key {str(raw_key)!r}",
                    hint="gpus takes count, model and memory",
                )
        sub = {str(k): v for k, v in gpus.items()}
        if sub.get("count") is not None:
            fields["gpus"] = _count(sub["count"], "gpus.count")
        if sub.get("model") is not None:
            if "gpu_model" in fields:
                raise CapacityValueError("gpus.model", "gpu_model is also given; give only one")
            fields["gpu_model"] = _text(sub["model"], "gpus.model")
        mem = _one_of(sub, "memory", "memory_bytes")
        if mem and mem[1] is not None:
            if "gpu_memory_bytes" in fields:
                raise CapacityValueError(
                    f"gpus.{mem[0]}", "gpu_memory is also given; give only one"
                )
            fields["gpu_memory_bytes"] = _size(mem[1], f"gpus.{mem[0]}")
    elif gpus is not None:
        fields["gpus"] = _count(gpus, "gpus")
    return DeclaredCapacity(**fields)
