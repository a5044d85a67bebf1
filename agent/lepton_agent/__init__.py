"""lepton_agent: the host agent leptonctl pushes to each host (stdlib only, python3 >= 3.8).

One package, pushed as one archive named by its hash and unpacked under
``~/.cache/leptonctl/``. Modules by concern: wire (the protocol: requests, replies,
frames, validators; imported by leptonctl too), ops (a handler per operation), cli
(command line and serve loop), probe/sysinfo/hardware (the host document), jobs/jobstate/
supervisor (detached jobs), chunks/refs (the chunk store), datasets/files (scan,
materialize, files-mode destinations), keys (grants, authorized_keys), transfers (send,
recv) and netprobe. The protocol is described in docs/protocol.md, generated from wire.

psutil is used when it can be imported and is never installed; GPUs are read through the
driver's own libnvidia-ml.so.1 (ctypes, nvml.py), else nvidia-smi. Missing hardware is not an
error: it shows up as an empty list plus a reason in ``unavailable``.
Environment: ``LEPTON_AGENT_NO_PSUTIL=1`` and ``LEPTON_AGENT_NO_NVML=1`` turn those off;
``LEPTON_AGENT_FAIL_SECTIONS=cpu,gpus`` makes the named probe sections raise;
``LEPTON_AGENT_AUTHORIZED_KEYS`` overrides the authorized_keys path (tests).
"""
