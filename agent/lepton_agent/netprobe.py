"""net-probe: rtt and bandwidth to a peer, measured against its recv in probe mode."""

from __future__ import annotations

import sys
import time

from .fsutil import IO_BLOCK
from .keys import revoke
from .transfers import NextHop
from .wire import END_FRAME, SCHEMA, check_transfer_id, encode_frame, json_line


def net_probe(data_dir, spec):
    """Measure the link to spec["next"] over the transfer channel: the round-trip time
    (best of a few acked empty frames) and the bandwidth (zero-filled frames for about
    spec["seconds"], then one ack; the ack's own round trip is taken off the time)."""
    transfer_id = check_transfer_id(spec.get("transfer"))
    budget = float(spec.get("seconds") or 1.0)
    max_bytes = int(spec.get("max_bytes") or (1 << 30))
    hop = NextHop(data_dir, transfer_id, spec["next"])
    result = {"schema": SCHEMA, "rtt_s": None, "bandwidth_bps": None, "bytes": 0, "error": None}
    block = bytes(4 * IO_BLOCK)

    def ack(first=False):
        hop.write(encode_frame({"n": 0, "ack": True}))  # ssh's stdin is unbuffered: sent now
        line = hop.proc.stdout.readline(64) if hop.out is not None else b""
        # the first answer may follow what the peer's login shell printed (a chatty .bashrc)
        skipped = 0
        while first and line and not line.rstrip().endswith(b"ack") and skipped < 64 * 1024:
            skipped += len(line)
            line = hop.proc.stdout.readline(4096)
        answered = line.rstrip().endswith(b"ack") if first else line.strip() == b"ack"
        if not answered:
            raise OSError("no ack from the peer")

    try:
        started = time.monotonic()
        ack(first=True)  # the connection is up (handshake, key, forced command) after this
        rtts = []
        for _ in range(3):
            at = time.monotonic()
            ack()
            rtts.append(time.monotonic() - at)
        rtt = min(rtts)
        at, sent = time.monotonic(), 0
        while time.monotonic() - at < budget and sent < max_bytes and hop.out is not None:
            hop.write(json_line({"n": len(block)}).encode())
            hop.write(block)
            sent += len(block)
        ack()
        elapsed = max(time.monotonic() - at - rtt, 1e-6)
        result.update(rtt_s=round(rtt, 6), bandwidth_bps=round(sent / elapsed, 1), bytes=sent,
                      setup_s=round(at - started, 6))  # fmt: skip
    except (OSError, ValueError) as exc:
        result["error"] = hop.error or "probe failed: %s" % exc
    finally:
        if hop.out is not None:
            hop.write(END_FRAME)
        downstream = hop.finish()
        revoke(data_dir, transfer_id)
    if result["error"] and downstream and downstream[-1].get("error"):
        result["error"] = downstream[-1]["error"]
    sys.stdout.write(json_line(result))
    return 0
