"""Tests of the agent (agent/lepton_agent/), run as a subprocess as leptonctl runs it on a host.

Hardware is simulated with a fake filesystem tree handed to ``--root`` (sysfs, /proc, /etc)
and with fake tools (``nvidia-smi``, ``xbutil``) put first on PATH. PATH never contains the
real system directories, so a real nvidia-smi on the test machine cannot leak in.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[1] / "agent"  # the payload: `python agent COMMAND`
SYSTEM_PYTHON = "/usr/bin/python3"

# 2 sockets x 2 cores x 2 threads; core ids repeat on each socket, as on real Xeons.
CPU_MODEL = "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz"
MEMINFO = """\
MemTotal:       263842068 kB
MemFree:        198234112 kB
MemAvailable:   251234560 kB
Buffers:          1234567 kB
Cached:          48765432 kB
SwapCached:             0 kB
HugePages_Total:        0
Hugepagesize:       2048 kB
"""
OS_RELEASE = """\
PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
ID=ubuntu
"""
# (bdf, vendor, device, class, driver, numa_node); the Intel root port is the parent of the
# Alveo in sysfs, the Xilinx function at 5e:00.0 is a PCIe bridge and must not count.
PCI_DEVICES = [
    ("0000:00:00.0", "0x8086", "0x2020", "0x060000", None, "0"),
    ("0000:00:17.0", "0x8086", "0xa182", "0x010601", "ahci", "0"),
    ("0000:18:00.0", "0x10de", "0x2330", "0x030200", None, "0"),
    ("0000:19:00.0", "0x15b3", "0x101b", "0x020000", "mlx5_core", "0"),
    ("0000:3a:00.0", "0x8086", "0x2030", "0x060400", "pcieport", "0"),
    ("0000:3b:00.1", "0x10ee", "0x5005", "0x120000", "xocl", "0"),
    ("0000:3b:00.0", "0x10ee", "0x5004", "0x120000", "xclmgmt", "0"),
    ("0000:5e:00.0", "0x10ee", "0x9038", "0x060400", "pcieport", "0"),
    ("0000:af:00.0", "0x8086", "0x09c4", "0x120000", "dfl-pci", "1"),
]
ALVEO_U250 = {
    "index": 0,
    "slot": "0000:3b:00",
    "vendor_id": "0x10ee",
    "vendor": "Xilinx/AMD",
    "device_id": "0x5004",
    "class": "0x120000",
    "functions": ["0000:3b:00.0", "0000:3b:00.1"],
    "driver": "xclmgmt",
    "numa_node": 0,
    "name": "Alveo U250",
    "details": {
        "functions": {
            "0000:3b:00.0": {"device_id": "0x5004", "class": "0x120000", "driver": "xclmgmt"},
            "0000:3b:00.1": {"device_id": "0x5005", "class": "0x120000", "driver": "xocl"},
        }
    },
}
INTEL_PAC = {
    "index": 1,
    "slot": "0000:af:00",
    "vendor_id": "0x8086",
    "vendor": "Intel/Altera",
    "device_id": "0x09c4",
    "class": "0x120000",
    "functions": ["0000:af:00.0"],
    "driver": "dfl-pci",
    "numa_node": 1,
    "name": "Intel PAC with Arria 10 GX",
    "details": {
        "functions": {
            "0000:af:00.0": {"device_id": "0x09c4", "class": "0x120000", "driver": "dfl-pci"}
        }
    },
}

# A fake nvidia-smi: no GPU is present on CI, so this script stands in for the real tool and
# prints what nvidia-smi 550 prints on a two-GPU H100 host (values in MiB, W, C, %).
H100_GPUS = [
    {
        "index": "0",
        "uuid": "GPU-1f4c2b8e-6a0d-4f5e-9c3b-2d7a8e9f0a11",
        "name": "NVIDIA H100 80GB HBM3",
        "pci.bus_id": "00000000:18:00.0",
        "memory.total": "81559",
        "memory.used": "40321",
        "utilization.gpu": "87",
        "utilization.memory": "41",
        "temperature.gpu": "64",
        "power.draw": "512.34",
        "power.limit": "700.00",
        "compute_cap": "9.0",
        "mig.mode.current": "Disabled",
        "ecc.errors.uncorrected.volatile.total": "0",
        "driver_version": "550.54.15",
    },
    {
        "index": "1",
        "uuid": "GPU-9a7e3c51-0b2d-4e8f-a6c4-5f1e2d3c4b5a",
        "name": "NVIDIA H100 80GB HBM3",
        "pci.bus_id": "00000000:2A:00.0",
        "memory.total": "81559",
        "memory.used": "0",
        "utilization.gpu": "0",
        "utilization.memory": "0",
        "temperature.gpu": "31",
        "power.draw": "[N/A]",
        "power.limit": "700.00",
        "compute_cap": "9.0",
        "mig.mode.current": "Enabled",
        "ecc.errors.uncorrected.volatile.total": "[Not Supported]",
        "driver_version": "550.54.15",
    },
]
H100_APPS = [
    "GPU-1f4c2b8e-6a0d-4f5e-9c3b-2d7a8e9f0a11, 48213, /usr/bin/python3, 40310",
    "GPU-9a7e3c51-0b2d-4e8f-a6c4-5f1e2d3c4b5a, 48777, /opt/conda/bin/python, [N/A]",
]
SMI_BANNER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""
FAKE_SMI = """\
#!{python}
import os, sys
GPUS = {gpus!r}
APPS = {apps!r}
args = sys.argv[1:]
query = [a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")]
if query:
    fields = query[0].split(",")
    if os.environ.get("FAKE_SMI_OLD") and "compute_cap" in fields:
        print('Field "compute_cap" is not a valid field to query.')
        sys.exit(2)
    for gpu in GPUS:
        print(", ".join(gpu.get(f, "[N/A]") for f in fields))
elif any(a.startswith("--query-compute-apps=") for a in args):
    print("\\n".join(APPS))
elif not args:
    sys.stdout.write({banner!r})
else:
    sys.exit(1)
"""


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def symlink(link: Path, target: Path) -> None:
    """Relative symlink, as the kernel makes them in sysfs."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def cpuinfo_text() -> str:
    blocks = []
    processor = 0
    for thread in range(2):
        for socket_id in range(2):
            for core in range(2):
                blocks.append(
                    f"processor\t: {processor}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
                    f"model\t\t: 85\nmodel name\t: {CPU_MODEL}\nstepping\t: 7\n"
                    f"cpu MHz\t\t: 2900.000\ncache size\t: 22528 KB\n"
                    f"physical id\t: {socket_id}\nsiblings\t: 4\ncore id\t\t: {core}\n"
                    f"cpu cores\t: 2\napicid\t\t: {socket_id * 64 + core * 2 + thread}\n"
                    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep avx512f\n"
                )
                processor += 1
    return "\n".join(blocks) + "\n"


def build_host_tree(root: Path, data_dir: Path) -> None:
    """A realistic fake host: PCI sysfs with symlinks, fpga_manager, /proc and /etc files."""
    sysfs = root / "sys"
    for bdf, vendor, device, pci_class, driver, numa in PCI_DEVICES:
        bus = bdf.split(":")[1]
        real = sysfs / "devices" / f"pci0000:{bus}" / bdf
        for name, value in (("vendor", vendor), ("device", device), ("class", pci_class)):
            write(real / name, value + "\n")
        write(real / "numa_node", numa + "\n")
        if driver:
            drivers = sysfs / "bus" / "pci" / "drivers" / driver
            drivers.mkdir(parents=True, exist_ok=True)
            symlink(real / "driver", drivers)
        symlink(sysfs / "bus" / "pci" / "devices" / bdf, real)
    manager = sysfs / "class" / "fpga_manager" / "fpga0"
    write(manager / "name", "DFL FME FPGA Manager\n")
    write(manager / "state", "operating\n")
    cpufreq = sysfs / "devices" / "system" / "cpu" / "cpu0" / "cpufreq"
    write(cpufreq / "scaling_cur_freq", "2900000\n")
    write(cpufreq / "cpuinfo_max_freq", "3900000\n")
    write(root / "proc" / "cpuinfo", cpuinfo_text())
    write(root / "proc" / "meminfo", MEMINFO)
    data_mount = data_dir.parent
    write(
        root / "proc" / "mounts",
        "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
        "/dev/nvme0n1p2 / ext4 rw,relatime 0 0\n"
        f"/dev/md0 {data_mount} xfs rw,relatime,attr2,inode64 0 0\n"
        f"/dev/md1 {str(data_mount)[:-1]} xfs rw,relatime 0 0\n",  # a prefix, not a parent
    )
    write(root / "etc" / "os-release", OS_RELEASE)


def run_agent(
    *args: str,
    tmp_path: Path,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LEPTON_AGENT_", "FAKE_"))}
    # PATH holds only our fake tools; NVML is off unless a test hands in the fake libnvidia-ml
    clean.update(
        {"PATH": str(bin_dir), "LEPTON_AGENT_NO_NVML": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    )
    clean.update(env or {})
    return subprocess.run(
        [python, str(AGENT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean,
        timeout=120,
    )


def probe_json(tmp_path: Path, *extra: str, **kwargs) -> dict:
    proc = run_agent("probe", *extra, tmp_path=tmp_path, **kwargs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1, "probe must print exactly one line"
    return json.loads(proc.stdout)


@pytest.fixture
def host(tmp_path: Path) -> dict:
    root = tmp_path / "root"
    data_dir = tmp_path / "data" / "leptonctl"
    build_host_tree(root, data_dir)
    return {
        "root": root,
        "data_dir": data_dir,
        "args": ["--root", str(root), "--data-dir", str(data_dir)],
    }


def install_tool(tmp_path: Path, name: str, text: str) -> None:
    tool = tmp_path / "bin" / name
    write(tool, text)
    tool.chmod(0o755)


def install_fake_nvidia_smi(tmp_path: Path) -> None:
    script = FAKE_SMI.format(
        python=sys.executable, gpus=H100_GPUS, apps=H100_APPS, banner=SMI_BANNER
    )
    install_tool(tmp_path, "nvidia-smi", script)


def test_fake_tree_groups_alveo_functions_into_one_card_and_ignores_bridges(tmp_path, host):
    doc = probe_json(tmp_path, *host["args"])
    assert doc["fpgas"] == [ALVEO_U250, INTEL_PAC]
    assert doc["fpga_managers"] == [
        {"name": "DFL FME FPGA Manager", "device": "fpga0", "state": "operating"}
    ]
    assert "fpgas" not in doc["unavailable"]
    assert "fpga_tools" not in doc  # no xbutil / fpgainfo on PATH


def test_fake_root_cpu_memory_os_and_mount_come_from_files_even_with_psutil(tmp_path, host):
    # sys.executable may have psutil; with --root it must not be used (it reads the real /proc).
    doc = probe_json(tmp_path, *host["args"])
    cpu = doc["cpu"]
    assert (cpu["model"], cpu["cores"], cpu["threads"], cpu["usable_threads"]) == (
        CPU_MODEL,
        4,
        8,
        8,
    )
    assert (cpu["freq_mhz"], cpu["max_freq_mhz"]) == (2900.0, 3900.0)
    assert len(cpu["load"]) == 3
    assert doc["memory"] == {
        "total_bytes": 263842068 * 1024,
        "available_bytes": 251234560 * 1024,
    }
    assert doc["os"]["distro"] == "Ubuntu 22.04.4 LTS"
    [disk] = doc["disks"]
    data_dir = str(host["data_dir"])
    assert (disk["path"], disk["role"], disk["mount"]) == (
        data_dir,
        "data",
        str(host["data_dir"].parent),
    )
    st = os.statvfs(data_dir)
    assert disk["total_bytes"] == st.f_blocks * st.f_frsize
    assert doc["schema"] == 1 and doc["probe_ms"] >= 0
    assert doc["python"]["executable"] == sys.executable


def test_no_gpu_tool_gives_empty_gpus_and_counts_driverless_nvidia_pci_devices(tmp_path, host):
    doc = probe_json(tmp_path, *host["args"])
    assert doc["gpus"] == []
    assert doc["gpu_driver"] == {"driver_version": None, "cuda_version": None, "source": None}
    assert doc["unavailable"]["gpus"] == (
        "NVML not available (disabled by LEPTON_AGENT_NO_NVML) and nvidia-smi not on PATH; "
        "1 NVIDIA PCI device(s) present without a usable driver"
    )


def test_fake_nvidia_smi_h100_output_is_parsed_into_gpus_with_bytes_and_nulls(tmp_path, host):
    install_fake_nvidia_smi(tmp_path)
    doc = probe_json(tmp_path, *host["args"])
    assert doc["gpu_driver"] == {
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "source": "nvidia-smi",
    }
    assert doc["gpus"][0] == {
        "index": 0,
        "uuid": "GPU-1f4c2b8e-6a0d-4f5e-9c3b-2d7a8e9f0a11",
        "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": "00000000:18:00.0",
        "memory_total_bytes": 81559 * 1024 * 1024,
        "memory_used_bytes": 40321 * 1024 * 1024,
        "utilization_pct": 87.0,
        "memory_utilization_pct": 41.0,
        "temperature_c": 64.0,
        "power_w": 512.34,
        "power_limit_w": 700.0,
        "compute_capability": "9.0",
        "mig_mode": "disabled",
        "ecc_uncorrected": 0,
        "processes": [
            {
                "pid": 48213,
                "name": "/usr/bin/python3",
                "used_memory_bytes": 40310 * 1024 * 1024,
                "uid": None,  # no /proc/48213/status in the fake root
                "user": None,
                "job": None,  # no jobs under the data dir
            }
        ],
        "mig_devices": [],
        "topology": {},  # this fake nvidia-smi knows no `topo -m`
        "health": {
            "ecc_uncorrected_volatile": 0,
            "retired_pages": None,
            "retired_pages_pending": None,
            "remapped_rows_pending": None,
            "remapped_rows_failed": None,
            "xid": None,  # no /dev/kmsg in the fake root
        },
        "numa_node": 0,  # sysfs numa_node of 0000:18:00.0 (NVIDIA writes 00000000:18:00.0)
    }
    second = doc["gpus"][1]
    assert (second["index"], second["power_w"], second["ecc_uncorrected"]) == (1, None, None)
    assert (second["mig_mode"], second["memory_used_bytes"]) == ("enabled", 0)
    assert second["processes"] == [
        {
            "pid": 48777,
            "name": "/opt/conda/bin/python",
            "used_memory_bytes": None,
            "uid": None,
            "user": None,
            "job": None,
        }
    ]
    assert "gpus" not in doc["unavailable"]


def test_nvidia_smi_rejecting_compute_cap_is_queried_again_without_it(tmp_path, host):
    install_fake_nvidia_smi(tmp_path)
    doc = probe_json(tmp_path, *host["args"], env={"FAKE_SMI_OLD": "1"})
    assert [gpu["uuid"] for gpu in doc["gpus"]] == [gpu["uuid"] for gpu in H100_GPUS]
    assert [gpu["compute_capability"] for gpu in doc["gpus"]] == [None, None]
    assert doc["gpus"][0]["memory_total_bytes"] == 81559 * 1024 * 1024


def test_xbutil_text_is_kept_to_its_first_40_lines_in_fpga_tools(tmp_path, host):
    lines = "\\n".join(f"line {i}" for i in range(60))
    install_tool(tmp_path, "xbutil", f'#!{sys.executable}\nprint("{lines}")\n')
    doc = probe_json(tmp_path, *host["args"])
    assert doc["fpga_tools"] == {"xbutil": "\n".join(f"line {i}" for i in range(40))}


def test_host_without_fpgas_reports_how_many_pci_devices_were_scanned(tmp_path):
    root = tmp_path / "root"
    write(root / "sys" / "bus" / "pci" / "devices" / "0000:00:00.0" / "vendor", "0x8086\n")
    write(root / "sys" / "bus" / "pci" / "devices" / "0000:00:00.0" / "class", "0x060000\n")
    write(root / "sys" / "bus" / "pci" / "devices" / "0000:00:02.0" / "vendor", "0x1234\n")
    doc = probe_json(tmp_path, "--root", str(root), "--data-dir", str(tmp_path / "d"))
    assert (doc["fpgas"], doc["fpga_managers"]) == ([], [])
    assert doc["unavailable"]["fpgas"] == "no FPGA found (scanned 2 PCI devices)"


def test_root_without_pci_sysfs_says_so_for_fpgas(tmp_path):
    root = tmp_path / "empty-root"
    root.mkdir()
    doc = probe_json(tmp_path, "--root", str(root), "--data-dir", str(tmp_path / "d"))
    pci = os.path.join(str(root), "sys/bus/pci/devices")
    assert doc["unavailable"]["fpgas"] == f"no PCI sysfs at {pci}"
    assert doc["unavailable"]["memory"].startswith("no MemTotal in ")
    assert doc["memory"] == {"total_bytes": None, "available_bytes": None}


def test_garbled_or_missing_files_give_nulls_not_a_crash(tmp_path, host):
    root = host["root"]
    devices = root / "sys" / "bus" / "pci" / "devices"
    write(devices / "0000:3b:00.1" / "vendor", b"\xff\xfe\x00\x10garbage")
    (devices / "0000:af:00.0" / "device").unlink()
    write(devices / "0000:af:00.0" / "numa_node", "not-a-number\n")
    (devices / "0000:d8:00.0" / "vendor").mkdir(parents=True)  # a dir where a file belongs
    (devices / "0000:d8:00.0" / "driver").symlink_to("../../nowhere")  # dangling
    write(root / "proc" / "cpuinfo", b"\x7fELF\x02\x01\x00\xff\xfe no fields here\n\n::\n:\n")
    (root / "proc" / "meminfo").unlink()
    (root / "etc" / "os-release").unlink()
    write(root / "proc" / "mounts", "garbage\n\n \\\n")
    doc = probe_json(tmp_path, *host["args"])
    alveo, pac = doc["fpgas"]
    # .1 lost its vendor but is still an accelerator by class, so it stays on the card
    assert alveo["functions"] == ["0000:3b:00.0", "0000:3b:00.1"]
    assert (pac["device_id"], pac["name"], pac["numa_node"]) == (None, None, None)
    assert doc["memory"] == {"total_bytes": None, "available_bytes": None}
    assert (doc["cpu"]["model"], doc["cpu"]["cores"]) == (None, None)
    assert isinstance(doc["cpu"]["threads"], int)  # falls back to os.cpu_count()
    assert (doc["os"]["distro"], doc["disks"][0]["mount"]) == (None, None)
    assert {"memory", "distro", "cpu_cores"} <= set(doc["unavailable"])


def test_failing_section_is_named_in_unavailable_and_the_others_still_report(tmp_path, host):
    doc = probe_json(tmp_path, *host["args"], env={"LEPTON_AGENT_FAIL_SECTIONS": "cpu"})
    assert doc["cpu"]["cores"] is None and doc["cpu"]["model"] is None
    assert doc["unavailable"]["cpu"].startswith("probe failed: RuntimeError: injected failure")
    assert doc["fpgas"] == [ALVEO_U250, INTEL_PAC]
    assert doc["memory"]["total_bytes"] == 263842068 * 1024


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no /usr/bin/python3")
def test_system_python3_gives_the_same_document_for_the_same_tree(tmp_path, host):
    theirs = probe_json(tmp_path, *host["args"], python=SYSTEM_PYTHON)
    ours = probe_json(tmp_path, *host["args"])
    assert theirs["python"]["executable"] == SYSTEM_PYTHON
    for key in ("cpu", "memory", "fpgas", "fpga_managers", "gpus", "os"):
        if key == "cpu":
            theirs[key].pop("load"), ours[key].pop("load")
        assert theirs[key] == ours[key], key


def test_real_host_file_fallback_agrees_with_psutil_on_memory_and_threads(tmp_path):
    pytest.importorskip("psutil")
    data_dir = str(tmp_path / "d")
    with_psutil = probe_json(tmp_path, "--data-dir", data_dir)
    without = probe_json(tmp_path, "--data-dir", data_dir, env={"LEPTON_AGENT_NO_PSUTIL": "1"})
    assert with_psutil["memory"]["total_bytes"] == without["memory"]["total_bytes"]
    assert with_psutil["cpu"]["threads"] == without["cpu"]["threads"]
    assert without["memory"]["total_bytes"] > 0


def test_data_dir_and_missing_parents_are_created_with_mode_0700(tmp_path):
    data_dir = tmp_path / "a" / "b" / "leptonctl"
    probe_json(tmp_path, "--data-dir", str(data_dir))
    for path in (data_dir, data_dir.parent, data_dir.parent.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_default_data_dir_is_under_xdg_data_home(tmp_path):
    xdg = tmp_path / "xdg"
    doc = probe_json(tmp_path, env={"XDG_DATA_HOME": str(xdg)})
    assert doc["disks"][0]["path"] == str(xdg / "leptonctl")
    assert stat.S_IMODE((xdg / "leptonctl").stat().st_mode) == 0o700


def test_version_prints_schema_and_the_module_agent_version(tmp_path):
    from agent.lepton_agent import wire

    proc = run_agent("version", tmp_path=tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"schema": 1, "agent_version": wire.AGENT_VERSION}


def test_serve_answers_each_request_with_one_line_and_exits_zero_on_eof(tmp_path, host):
    requests = ['{"op": "probe"}', '{"op": "ping", "id": 7}', '{"op": "reboot"}']
    proc = run_agent("serve", *host["args"], tmp_path=tmp_path, stdin="\n".join(requests) + "\n")
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(replies) == 3
    assert replies[0]["fpgas"] == [ALVEO_U250, INTEL_PAC]
    assert replies[1] == {"schema": 1, "pong": True, "agent_version": "0.1.0", "id": 7}
    assert replies[2] == {"schema": 1, "error": "unknown op 'reboot'"}


def test_serve_answers_garbage_lines_with_an_error_and_keeps_serving(tmp_path):
    stdin = 'not json\n\n[1, 2]\n{"op": "version"}\n'
    proc = run_agent("serve", "--data-dir", str(tmp_path / "d"), tmp_path=tmp_path, stdin=stdin)
    assert proc.returncode == 0
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [sorted(reply) for reply in replies] == [
        ["error", "schema"],
        ["error", "schema"],
        ["agent_version", "schema"],
    ]


def test_uncreatable_data_dir_is_reported_and_its_disk_left_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    doc = probe_json(tmp_path, "--data-dir", str(blocker / "leptonctl"))
    assert doc["disks"] == []
    assert doc["unavailable"]["data_dir"].startswith("cannot create data dir ")
    assert doc["unavailable"]["disks"].startswith("statvfs(")
    assert doc["memory"]["total_bytes"] > 0  # the rest of the probe still reports
