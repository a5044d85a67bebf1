"""What the whole agent shares and the probe needs without importing wire.

``probe`` runs on every host at every ``leptonctl status``: its path (cli, probe, sysinfo,
hardware, storage, fsutil) imports neither ``wire`` (its registry of dataclasses takes three
times the interpreter's own start to import) nor argparse. wire re-exports these names.
"""

from __future__ import annotations

import json

AGENT_VERSION = "0.1.0"
SCHEMA = 1
MIB = 1024 * 1024


def json_line(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str) + "\n"
