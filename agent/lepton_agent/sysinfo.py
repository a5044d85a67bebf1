"""Small helpers of the probe: file reads under a fake root, tool runs, the Host being probed, PCI
functions.
"""

from __future__ import annotations

import os
import re

TOOL_TIMEOUT_S = 10


TOOL_TEXT_LINES = 40


def env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def read_text(path):
    """Whole file as text, or None if it cannot be read (missing, a dir, ...)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def read_line(*parts):
    """Stripped content of the file os.path.join(*parts), or None if missing or empty."""
    text = (read_text(os.path.join(*parts)) or "").strip()
    return text or None


def convert(value, kind=int):
    """kind(value) or None when value is None or does not parse."""
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError):
        return None


def as_text(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return None if value is None else str(value)


def norm_hex(value):
    """'0x10EE\\n' -> '0x10ee'; anything that is not a hex number -> None."""
    value = (value or "").strip().lower()
    return value if re.match(r"^0x[0-9a-f]+$", value) else None


def run_tool(argv):
    """Run a tool with stdin closed; return (returncode or None, stdout, stderr)."""
    import subprocess

    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            errors="replace",
            timeout=TOOL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None, "", "timed out after %d s" % TOOL_TIMEOUT_S
    except OSError as exc:
        return None, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def first_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else "no output"


class Host:
    """What one probe needs: the file root, the data dir, psutil (or None), the reasons."""

    def __init__(self, root, data_dir):
        self.root = root or "/"
        self.real_root = os.path.realpath(self.root) == "/"
        self.data_dir = data_dir
        self.unavailable = {}
        self.psutil = import_psutil() if self.real_root else None
        self._pci = None

    def path(self, *parts):
        return os.path.join(self.root, *(part.lstrip("/") for part in parts))

    def pci_functions(self):
        if self._pci is None:
            self._pci = read_pci_functions(self)
        return self._pci


def import_psutil():
    if env_flag("LEPTON_AGENT_NO_PSUTIL"):
        return None
    try:
        import psutil
    except Exception:
        return None
    return psutil


def pci_driver(device_dir):
    """Basename of the device's `driver` symlink (the bound kernel driver), or None."""
    link = os.path.join(device_dir, "driver")
    return os.path.basename(os.path.realpath(link)) or None if os.path.lexists(link) else None


def read_pci_functions(host):
    """(sysfs dir, [function dicts]) of ROOT/sys/bus/pci/devices; the list is None if missing."""
    base = host.path("/sys/bus/pci/devices")
    if not os.path.isdir(base):
        return base, None
    functions = []
    for name in sorted(os.listdir(base)):
        function = {"bdf": name, "dir": os.path.join(base, name)}
        for key in ("vendor", "device", "class"):
            function[key] = norm_hex(read_line(base, name, key))
        functions.append(function)
    return base, functions
