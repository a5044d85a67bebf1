"""The agent's GPUs through NVML (ctypes on a fake libnvidia-ml) and through nvidia-smi
(recorded outputs): every fact of the GPU contract, and every failure as a reason.

The fake library (tests/fixtures/agent/fake_nvml/fake_nvml.c, the ``fake_nvml`` fixture) has
NVML's signatures and struct layouts; what it answers comes from a config file per test
(model.h100_box: eight H100s, NVLink pairs, MIG on one GPU, processes). The agent runs as a
subprocess, as on a host, on a fake root (sysfs NUMA nodes, /proc of the GPU processes, a
kernel log) unless a test needs a real process.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.lepton_agent import hardware, nvml, sysinfo
from tests.fixtures.agent.fake_nvml.model import (
    GIB,
    H100_BUSES,
    H100_MEMORY,
    H100_NAME,
    FakeNvml,
    build_fake_nvml,
    gpu_uuid,
    h100_box,
    mig_uuid,
)
from tests.test_agent_probe import probe_json, run_agent, write

SMI_DIR = Path(__file__).resolve().parent / "fixtures" / "agent" / "nvidia_smi"
NOBODY = 65534
HEALTHY = {
    "ecc_uncorrected_volatile": 0,
    "retired_pages": None,  # H100: rows are remapped, pages are not retired
    "retired_pages_pending": None,
    "remapped_rows_pending": False,
    "remapped_rows_failed": False,
    "xid": [],
}


def user_of(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def proc_entry(root: Path, pid: int, name: str, uid: int, pgrp: int) -> None:
    """/proc/<pid>/{comm,status,stat} of a process in the fake root."""
    write(root / "proc" / str(pid) / "comm", name + "\n")
    write(root / "proc" / str(pid) / "status", f"Name:\t{name}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    write(root / "proc" / str(pid) / "stat", f"{pid} ({name}) S 1 {pgrp} {pgrp} 0 -1 4194304\n")


def kmsg_record(seq: int, age_s: float, message: str) -> str:
    stamp = int((time.monotonic() - age_s) * 1e6)
    return f"4,{seq},{stamp},-;{message}\n SUBSYSTEM=pci\n DEVICE=+pci:0000:5d:00.0\n"


def gpu_box_root(tmp_path: Path) -> Path:
    """A fake root: the eight GPUs in PCI sysfs (NUMA node 0 for 0-3, 1 for 4-7)."""
    root = tmp_path / "root"
    for i, bus in enumerate(H100_BUSES):
        device = root / "sys" / "bus" / "pci" / "devices" / f"0000:{bus}:00.0"
        write(device / "vendor", "0x10de\n")
        write(device / "class", "0x030200\n")
        write(device / "numa_node", f"{i // 4}\n")
    return root


def probe_box(tmp_path: Path, root: Path, env: dict[str, str]) -> dict:
    data_dir = tmp_path / "data" / "leptonctl"
    return probe_json(tmp_path, "--root", str(root), "--data-dir", str(data_dir), env=env)


def nvml_env(fake_nvml: FakeNvml, tmp_path: Path, config: str, old: bool = False) -> dict:
    path = tmp_path / "nvml.conf"
    path.write_text(config)
    return fake_nvml.env(path, old=old)


def install_fake_smi(tmp_path: Path) -> None:
    smi = tmp_path / "bin" / "nvidia-smi"
    where = f"import os\nos.environ.setdefault('FAKE_SMI_DIR', {str(SMI_DIR)!r})\n"
    write(smi, f"#!{sys.executable}\n{where}" + (SMI_DIR / "fake_smi.py").read_text())
    smi.chmod(0o755)


def test_nvml_probe_of_an_8_h100_box_has_every_fact_of_the_contract(tmp_path, fake_nvml):
    root = gpu_box_root(tmp_path)
    proc_entry(root, 48213, "python3", NOBODY, pgrp=48213)  # someone else's training
    proc_entry(root, 48777, "train", 0, pgrp=777)  # a leptonctl job's (its group is 777)
    data_dir = tmp_path / "data" / "leptonctl"
    write(data_dir / "jobs" / "1.2.train" / "state.json", '{"state": "RUNNING", "pgid": 777}')
    write(data_dir / "jobs" / "1.1.done" / "state.json", '{"state": "RUNNING", "pgid": 48213}')
    write(data_dir / "jobs" / "1.1.done" / "end.json", '{"state": "COMPLETED"}')  # ended
    write(
        root / "dev" / "kmsg",
        kmsg_record(1, 30, "NVRM: Xid (PCI:0000:5d:00): 79, pid=48213, GPU has fallen off the bus.")
        + kmsg_record(2, 7200, "NVRM: Xid (PCI:0000:5d:00): 13, Graphics Exception")
        + kmsg_record(3, 10, "eth0: link up")
        + kmsg_record(4, 5, "NVRM: Xid (PCI:0000:ab:00): 48, DBE \x1b[31m"),
    )
    config = h100_box(
        mig_gpu=7,
        processes={2: [(48213, 40 * GIB)]},
        extra=[
            "mig 7 1 process 48777 -1",
            "gpu 3 ecc 2 5",
            "gpu 5 remapped 0 1 1 0",
            "gpu 6 retired 2 1 1",
        ],
    )
    doc = probe_box(tmp_path, root, nvml_env(fake_nvml, tmp_path, config))
    assert doc["gpu_driver"] == {"driver_version": "550.54.15", "cuda_version": "12.4",
                                 "source": "nvml"}  # fmt: skip
    gpus = doc["gpus"]
    assert [gpu["uuid"] for gpu in gpus] == [gpu_uuid(i) for i in range(8)]
    peers = {gpu_uuid(j): {"nvlink": 0, "path": "NODE" if j < 4 else "SYS"} for j in range(2, 8)}
    assert gpus[0] == {
        "index": 0,
        "uuid": gpu_uuid(0),
        "name": H100_NAME,
        "pci_bus_id": "00000000:18:00.0",
        "memory_total_bytes": H100_MEMORY,
        "memory_used_bytes": 0,
        "utilization_pct": 0.0,
        "memory_utilization_pct": 0.0,
        "temperature_c": 30.0,
        "power_w": 100.0,
        "power_limit_w": 700.0,
        "compute_capability": "9.0",
        "mig_mode": "disabled",
        "ecc_uncorrected": 0,
        "processes": [],
        "mig_devices": [],
        "topology": {gpu_uuid(1): {"nvlink": 18, "path": "NV"}, **peers},
        "health": HEALTHY,
        "numa_node": 0,
    }
    assert gpus[2]["processes"] == [
        {"pid": 48213, "name": "python3", "used_memory_bytes": 40 * GIB, "uid": NOBODY,
         "user": user_of(NOBODY), "job": None},
    ]  # fmt: skip
    assert gpus[5]["topology"][gpu_uuid(4)] == {"nvlink": 18, "path": "NV"}
    assert gpus[5]["topology"][gpu_uuid(6)] == {"nvlink": 0, "path": "NODE"}
    assert gpus[5]["numa_node"] == 1
    # health: ECC, remapped rows, retired pages, and the kernel log's Xids by PCI address
    assert (gpus[3]["ecc_uncorrected"], gpus[3]["health"]["ecc_uncorrected_volatile"]) == (2, 2)
    assert gpus[5]["health"]["remapped_rows_pending"] is True
    assert gpus[6]["health"]["retired_pages"] == 3
    assert gpus[6]["health"]["retired_pages_pending"] is True
    recent, old = gpus[3]["health"]["xid"]  # 0000:5d:00 is GPU 3
    assert (recent["code"], recent["text"]) == (79, "pid=48213, GPU has fallen off the bus.")
    assert 30 <= recent["age_s"] < 120 and 7200 <= old["age_s"] < 7300 and old["code"] == 13
    assert gpus[5]["health"]["xid"] == [{"code": 48, "age_s": gpus[5]["health"]["xid"][0]["age_s"],
                                         "text": "DBE ?[31m"}]  # fmt: skip
    # MIG: the parent's mode and each device (profile, instance ids, memory, processes)
    assert gpus[7]["mig_mode"] == "enabled"
    assert gpus[7]["mig_devices"] == [
        {"uuid": mig_uuid(7, 0), "index": 0, "profile": "1g.10gb", "gpu_instance_id": 9,
         "compute_instance_id": 0, "memory_total_bytes": 9856 * 1024**2,
         "memory_used_bytes": 0, "processes": []},
        {"uuid": mig_uuid(7, 1), "index": 1, "profile": "3g.40gb", "gpu_instance_id": 2,
         "compute_instance_id": 0, "memory_total_bytes": 40192 * 1024**2,
         "memory_used_bytes": 0, "processes": [
             {"pid": 48777, "name": "train", "used_memory_bytes": None, "uid": 0,
              "user": user_of(0), "job": "1.2.train"}]},
    ]  # fmt: skip
    reasons = doc["unavailable"]
    assert reasons["gpus[0].retired_pages"] == "nvmlDeviceGetRetiredPages: Not Supported"
    assert "gpus" not in reasons and not any(key.endswith(".xid") for key in reasons)


def test_a_real_process_on_a_gpu_is_named_with_its_uid_and_user(tmp_path, fake_nvml):
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    argv = [*as_nobody, "sleep", "60"] if os.geteuid() == 0 else ["sleep", "60"]
    sleeper = subprocess.Popen(argv)
    try:
        config = h100_box(2, processes={1: [(sleeper.pid, GIB)]})
        env = nvml_env(fake_nvml, tmp_path, config)
        doc = probe_json(tmp_path, "--data-dir", str(tmp_path / "d"), env=env)  # the real /proc
    finally:
        sleeper.kill()
        sleeper.wait()
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    assert doc["gpus"][1]["processes"] == [
        {"pid": sleeper.pid, "name": "sleep", "used_memory_bytes": GIB, "uid": uid,
         "user": user_of(uid), "job": None},
    ]  # fmt: skip


def test_every_nvml_failure_is_a_reason_and_the_rest_still_reports(tmp_path, fake_nvml):
    config = h100_box(
        4,
        extra=[
            "gpu 1 fail nvmlDeviceGetHandleByIndex_v2 15",  # GPU is lost
            "fail nvmlDeviceGetRemappedRows 3",
            "gpu 2 fail nvmlDeviceGetNvLinkState 999",
            "gpu 3 fail nvmlDeviceGetUUID 999",
            "gpu 0 fail nvmlDeviceGetComputeRunningProcesses_v3 4",
            "gpu 0 name NVIDIA\x1b[2J H100",  # a terminal escape in a name from the host
            "gpu 2 uuid GPU-2;rm",  # not a UUID
        ],
    )
    doc = probe_box(tmp_path, gpu_box_root(tmp_path), nvml_env(fake_nvml, tmp_path, config))
    reasons = doc["unavailable"]
    assert (
        reasons["gpus[1]"] == "NVML cannot open GPU 1 (nvmlDeviceGetHandleByIndex_v2: GPU is lost)"
    )
    assert reasons["gpus[0].remapped_rows_pending"] == "nvmlDeviceGetRemappedRows: Not Supported"
    assert reasons["gpus[2].topology"] == "nvmlDeviceGetNvLinkState: Unknown Error"
    assert reasons["gpus[3].uuid"] == "nvmlDeviceGetUUID: Unknown Error"
    assert reasons["gpus[0].processes"] == (
        "nvmlDeviceGetComputeRunningProcesses_v3: Insufficient Permissions"
    )
    lost, named = doc["gpus"][1], doc["gpus"][0]
    assert (lost["index"], lost["uuid"], lost["name"], lost["topology"]) == (1, None, None, {})
    assert (named["name"], named["health"]["remapped_rows_pending"]) == ("NVIDIA?[2J H100", None)
    assert (doc["gpus"][2]["uuid"], doc["gpus"][3]["uuid"]) == (None, None)
    assert doc["gpus"][0]["topology"] == {}  # its only peers: lost, unnamed, or with no UUID
    assert doc["gpus"][3]["memory_total_bytes"] == H100_MEMORY  # the rest still reports


def test_nvml_init_failure_falls_back_to_nvidia_smi_and_says_why(tmp_path, fake_nvml):
    root = gpu_box_root(tmp_path)
    env = nvml_env(fake_nvml, tmp_path, "init 9\n" + h100_box())
    doc = probe_box(tmp_path, root, env)
    assert doc["gpus"] == []
    assert doc["unavailable"]["gpus"] == (
        "NVML not available (nvmlInit_v2: Driver Not Loaded) and nvidia-smi not on PATH; "
        "8 NVIDIA PCI device(s) present without a usable driver"
    )
    install_fake_smi(tmp_path)
    doc = probe_box(tmp_path, root, env)
    assert doc["gpu_driver"]["source"] == "nvidia-smi" and len(doc["gpus"]) == 8


@pytest.mark.skipif(bool(ctypes.util.find_library("nvidia-ml")), reason="a real NVML is here")
def test_a_host_without_libnvidia_ml_says_the_library_is_missing(tmp_path):
    doc = probe_box(tmp_path, gpu_box_root(tmp_path), {"LEPTON_AGENT_NO_NVML": ""})
    assert doc["unavailable"]["gpus"].startswith(
        "NVML not available (libnvidia-ml.so.1: cannot open shared object file"
    )


def test_old_driver_v1_process_structs_and_legacy_pci_info_are_read_right(tmp_path, fake_nvml):
    config = h100_box(2, processes={0: [(101, GIB), (102, 3 * GIB)]})
    doc = probe_box(
        tmp_path, gpu_box_root(tmp_path), nvml_env(fake_nvml, tmp_path, config, old=True)
    )
    first = doc["gpus"][0]
    # two rows of nvmlProcessInfo_v1_t (16 bytes each): a v2 layout would misread the second
    assert [(p["pid"], p["used_memory_bytes"]) for p in first["processes"]] == [
        (101, GIB), (102, 3 * GIB)
    ]  # fmt: skip
    assert (first["pci_bus_id"], first["numa_node"]) == ("0000:18:00.0", 0)
    assert first["mig_mode"] is None and first["mig_devices"] == []
    assert first["topology"] == {gpu_uuid(1): {"nvlink": 18, "path": "NV"}}
    assert doc["unavailable"]["gpus[0].remapped_rows_failed"] == (
        "nvmlDeviceGetRemappedRows: not in this driver's NVML"
    )


def test_gpus_on_an_nvswitch_fabric_are_all_linked_to_each_other(tmp_path, fake_nvml):
    config = h100_box(4, nvlink_pairs=(), extra=[f"gpu {i} nvswitch 18" for i in range(4)])
    doc = probe_box(tmp_path, gpu_box_root(tmp_path), nvml_env(fake_nvml, tmp_path, config))
    for gpu in doc["gpus"]:
        others = [gpu_uuid(j) for j in range(4) if j != gpu["index"]]
        assert gpu["topology"] == {uuid: {"nvlink": 18, "path": "NV"} for uuid in others}


def test_mig_profile_comes_from_slices_and_memory_when_the_name_has_none(tmp_path, fake_nvml):
    extra = ["mig 7 0 name NVIDIA H100 80GB HBM3", "mig 7 1 name NVIDIA H100 80GB HBM3",
             "mig 7 1 attributes 3 2 40192"]  # fmt: skip
    config = h100_box(mig_gpu=7, extra=extra)
    doc = probe_box(tmp_path, gpu_box_root(tmp_path), nvml_env(fake_nvml, tmp_path, config))
    profiles = [mig["profile"] for mig in doc["gpus"][7]["mig_devices"]]
    assert profiles == ["1g.10gb", "2c.3g.40gb"]  # nvidia-smi's names: 9856 MB rounds up


def test_nvidia_smi_fallback_reads_the_recorded_8_gpu_box(tmp_path):
    root = gpu_box_root(tmp_path)
    proc_entry(root, 48213, "python3", NOBODY, pgrp=48213)
    install_fake_smi(tmp_path)
    doc = probe_box(tmp_path, root, {"LEPTON_AGENT_NO_NVML": "1"})
    assert doc["gpu_driver"] == {"driver_version": "550.54.15", "cuda_version": "12.4",
                                 "source": "nvidia-smi"}  # fmt: skip
    gpus = doc["gpus"]
    assert [gpu["uuid"] for gpu in gpus] == [gpu_uuid(i) for i in range(8)]
    assert gpus[2]["processes"] == [
        {"pid": 48213, "name": "/usr/bin/python3", "used_memory_bytes": 40310 * 1024**2,
         "uid": NOBODY, "user": user_of(NOBODY), "job": None},
    ]  # fmt: skip
    assert gpus[7]["mig_mode"] == "enabled"
    assert [(m["index"], m["profile"], m["uuid"]) for m in gpus[7]["mig_devices"]] == [
        (0, "3g.40gb", mig_uuid(7, 1)), (1, "1g.10gb", mig_uuid(7, 0))
    ]  # fmt: skip
    assert gpus[2]["topology"][gpu_uuid(3)] == {"nvlink": 18, "path": "NV"}
    assert gpus[2]["topology"][gpu_uuid(0)] == {"nvlink": 0, "path": "NODE"}
    assert gpus[2]["topology"][gpu_uuid(7)] == {"nvlink": 0, "path": "SYS"}
    assert gpus[3]["health"]["ecc_uncorrected_volatile"] == 2
    assert (gpus[5]["health"]["remapped_rows_pending"], gpus[4]["power_w"]) == (True, None)
    assert gpus[0]["health"]["retired_pages"] is None
    assert doc["unavailable"]["gpus[0].retired_pages"] == "not reported by nvidia-smi --query-gpu"
    assert [gpu["numa_node"] for gpu in gpus] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_topo_m_parser_reads_nvlink_counts_and_pcie_words_and_skips_nics():
    text = (
        "\tGPU0\tGPU1\tGPU2\tNIC0\tCPU Affinity\n"
        "GPU0\t X \tNV4\tSOC\tPIX\t0-7\n"
        "GPU1\tNV4\t X \tPXB\tNODE\t0-7\n"
        "GPU2\tSOC\tPXB\t X \tSYS\t8-15\n"
        "NIC0\tPIX\tNODE\tSYS\t X \n\nLegend:\n  X    = Self\n"
    )
    assert hardware.parse_smi_topology(text) == {
        (0, 1): (4, "NV"), (0, 2): (0, "SYS"), (1, 0): (4, "NV"), (1, 2): (0, "PXB"),
        (2, 0): (0, "SYS"), (2, 1): (0, "PXB"),
    }  # fmt: skip


def test_xid_parser_keys_messages_by_pci_address_and_ignores_the_rest():
    text = (
        "3,10,5000000,-;NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.\n"
        " SUBSYSTEM=pci\n"
        "3,11,7000000,-;NVRM: Xid (PCI:00000000:3B:00.0): 63, Row remapping\n"
        "6,12,8000000,-;NVRM: GPU at PCI:0000:3b:00: GPU-1\n"
        "not a record\n"
    )
    assert hardware.parse_xids(text, now=10.0) == {
        (0, 0x3B, 0): [
            {"code": 79, "age_s": 5.0, "text": "GPU has fallen off the bus."},
            {"code": 63, "age_s": 3.0, "text": "Row remapping"},
        ]
    }


def test_a_kernel_log_that_cannot_be_read_is_a_reason_per_gpu(tmp_path):
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "kmsg").symlink_to("/dev/null")  # not ours to follow
    host = sysinfo.Host(str(root), str(tmp_path / "d"))
    gpus = [dict(nvml.empty_gpu(0), pci_bus_id="00000000:18:00.0")]
    hardware.add_xids(host, gpus)
    assert gpus[0]["health"]["xid"] is None
    assert host.unavailable["gpus[0].xid"] == (
        f"cannot read {root}/dev/kmsg (Too many levels of symbolic links)"
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1",
    reason="needs root to start a process as nobody, and dmesg_restrict=1",
)
def test_the_real_kernel_log_as_an_unprivileged_user_is_a_reason(tmp_path):
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1])\n"
        "from lepton_agent import hardware, nvml, sysinfo\n"
        "host = sysinfo.Host('/', '/nonexistent')\n"
        "gpus = [dict(nvml.empty_gpu(0), pci_bus_id='00000000:18:00.0')]\n"
        "hardware.add_xids(host, gpus)\n"
        "print(json.dumps([gpus[0]['health']['xid'], host.unavailable]))\n"
    )
    agent = str(Path(__file__).resolve().parents[1] / "agent")
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "/usr/bin/python3", "-c", code, agent]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == [
        None, {"gpus[0].xid": "cannot read /dev/kmsg (Operation not permitted)"}
    ]  # fmt: skip


def test_a_probe_between_samples_leaves_the_sample_session_open(tmp_path, fake_nvml):
    env = nvml_env(fake_nvml, tmp_path, h100_box(2))
    lines = [{"op": "sample", "gpus": True}, {"op": "probe"}, {"op": "sample", "gpus": True}]
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    proc = run_agent("serve", "--data-dir", str(tmp_path / "d"), tmp_path=tmp_path, env=env,
                     stdin=stdin)  # fmt: skip
    first, probe, last = (json.loads(line) for line in proc.stdout.splitlines())
    assert probe["gpu_driver"]["source"] == "nvml" and len(probe["gpus"]) == 2
    assert [gpu["uuid"] for gpu in last["gpus"]] == [gpu_uuid(0), gpu_uuid(1)]
    assert "gpus_nvml" not in last["unavailable"] and first["gpus"] == last["gpus"]


def test_an_8_gpu_probe_costs_milliseconds_measured_not_asserted(tmp_path, fake_nvml, monkeypatch):
    config = tmp_path / "nvml.conf"
    config.write_text(h100_box(mig_gpu=7, processes={2: [(os.getpid(), GIB)]}))
    monkeypatch.setenv("FAKE_NVML_CONFIG", str(config))
    monkeypatch.delenv("LEPTON_AGENT_NO_NVML", raising=False)
    library = str(fake_nvml.library())
    runs, started = 20, time.perf_counter()
    for _ in range(runs):
        host = sysinfo.Host("/", str(tmp_path / "d"))
        gpus, _ = nvml.read_gpus(host, [], path=library)
    nvml_ms = (time.perf_counter() - started) * 1000 / runs
    started = time.perf_counter()
    for _ in range(runs):
        hardware.add_xids(host, gpus)
    xid_ms = (time.perf_counter() - started) * 1000 / runs
    print(f"8-GPU NVML probe: {nvml_ms:.2f} ms; kernel-log Xids: {xid_ms:.2f} ms (mean of {runs})")
    assert len(gpus) == 8 and gpus[2]["processes"][0]["pid"] == os.getpid()


def test_nvidia_smi_strings_are_validated_before_use(tmp_path):
    recorded = tmp_path / "smi"
    shutil.copytree(SMI_DIR, recorded)
    csv = recorded / "query-gpu.csv"
    header, first, *rest = csv.read_text().splitlines()
    cells = first.split(", ")
    cells[1:3] = ["GPU-0;reboot", "NVIDIA\x1b]0;owned\x07 H100"]  # uuid, name
    cells[11:13] = ["9.0 && x", "Pending"]  # compute_cap, mig.mode.current
    csv.write_text("\n".join([header, ", ".join(cells), *rest]) + "\n")
    install_fake_smi(tmp_path)
    env = {"LEPTON_AGENT_NO_NVML": "1", "FAKE_SMI_DIR": str(recorded)}
    gpu = probe_box(tmp_path, gpu_box_root(tmp_path), env)["gpus"][0]
    assert (gpu["uuid"], gpu["name"]) == (None, "NVIDIA?]0;owned? H100")
    assert (gpu["compute_capability"], gpu["mig_mode"]) == (None, None)


def test_building_the_fake_library_without_a_c_compiler_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no cc, no gcc
    with pytest.raises(RuntimeError, match="no C compiler"):
        build_fake_nvml(tmp_path / "lib")
