"""The agent's entry point: a plain ``probe`` on a short path, every other command line through
the parser that commands.py derives from the registry in wire.py.

The probe runs on every host at every ``leptonctl status``, so its path imports only what the
probe reads: neither wire (its registry of dataclasses costs three times the interpreter's own
start to import) nor argparse nor the modules of the other commands.
"""

from __future__ import annotations

import os
import sys

PROBE_OPTIONS = ("--root", "--data-dir")


def probe_options(argv):
    """``{"--root": R, "--data-dir": D}`` when argv is ``probe`` with at most those options
    (``--opt VALUE`` or ``--opt=VALUE``), else None: the full parser then answers it, errors
    and ``--help`` included."""
    if not argv or argv[0] != "probe":
        return None
    found = {"--root": "/", "--data-dir": None}
    rest = list(argv[1:])
    while rest:
        name, equals, value = rest.pop(0).partition("=")
        if name not in PROBE_OPTIONS:
            return None
        if not equals:
            if not rest or rest[0].startswith("-"):
                return None
            value = rest.pop(0)
        found[name] = value
    return found


def probe_command(root, data_dir):
    from . import fsutil, probe
    from .common import json_line

    data_dir = os.path.abspath(os.path.expanduser(data_dir or fsutil.default_data_dir()))
    sys.stdout.write(json_line(probe.probe(root, data_dir)))
    return 0


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    options = probe_options(args)
    if options is None:
        from .commands import main as full_main

        return full_main(args)
    from . import fsutil

    fsutil.USER_UMASK = os.umask(0o077)  # what commands.main does before any command
    return probe_command(options["--root"], options["--data-dir"])
