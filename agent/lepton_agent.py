#!/usr/bin/env python3
"""lepton_agent: the small host agent that leptonctl copies to a host over SSH.

It is one stdlib-only file that runs on any python3 >= 3.8. psutil and pynvml are
used when they can be imported and are never installed. Missing hardware is not
an error: it shows up as an empty list plus a reason in ``unavailable``.

Commands
--------
``probe [--data-dir DIR] [--root ROOT]``
    Print one JSON document (compact, one line) describing the host, exit 0.
``serve [--data-dir DIR] [--root ROOT]``
    Request/response loop over stdio for persistent sessions. Each stdin line is
    one JSON request; each request gets exactly one JSON line on stdout (flushed).
    Ops: ``{"op": "probe"}`` -> the probe document, ``{"op": "ping"}`` ->
    ``{"schema": 1, "pong": true, "agent_version": ...}``, ``{"op": "version"}``.
    Anything else -> ``{"schema": 1, "error": "..."}``. An ``"id"`` in a request is
    copied into its reply. Exit 0 on EOF.
``version``
    Print ``{"schema": 1, "agent_version": ...}``.

``--data-dir`` defaults to ``$XDG_DATA_HOME/leptonctl`` or ``~/.local/share/leptonctl``
and is created (mode 0700) when missing; its filesystem is reported in ``disks``.
``--root`` (default ``/``) prefixes every file read of /proc, /sys and /etc, so tests
can hand in a fake tree. With a root other than ``/`` psutil is not used (it would
read the real /proc); load average, statvfs, uname and hostname stay real.

Environment: ``LEPTON_AGENT_NO_PSUTIL=1`` and ``LEPTON_AGENT_NO_PYNVML=1`` disable
those imports; ``LEPTON_AGENT_FAIL_SECTIONS=cpu,gpus`` makes the named sections
raise (a test hook proving that one failing section does not sink the probe).

Wire format, schema 1: one JSON object per line. Top-level keys: ``schema`` (1),
``agent_version``, ``time``, ``probe_ms``, ``hostname``, ``os``, ``python``, ``cpu``,
``memory``, ``disks``, ``gpus``, ``gpu_driver``, ``fpgas``, ``fpga_managers``, optional
``fpga_tools`` ({"xbutil": text, "fpgainfo": text}) and ``unavailable`` ({section: reason}).
The field names of each section are the keys the ``read_*`` functions below return;
any field may be null where it could not be read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

# csv, shutil, subprocess and warnings are imported where they are used: a probe of a
# host without GPU tools never needs them, and every import is start-up time.

AGENT_VERSION = "0.1.0"
SCHEMA = 1
TOOL_TIMEOUT_S = 10
TOOL_TEXT_LINES = 40
MIB = 1024 * 1024

NVIDIA_VENDOR = "0x10de"
FPGA_VENDORS = ("0x10ee", "0x1172")  # every function of these vendors except bridges
VENDOR_NAMES = {"0x10ee": "Xilinx/AMD", "0x1172": "Intel/Altera", "0x8086": "Intel/Altera"}
# (vendor, device) -> card name; an Alveo card has a management and a user function
FPGA_CARD_NAMES = {("0x10ee", "0x%04x" % (base + fn)): "Alveo " + model for base, model in (
    (0x5000, "U200"), (0x5004, "U250"), (0x500C, "U280"), (0x5020, "U50"), (0x505C, "U55C")
) for fn in (0, 1)}  # fmt: skip
FPGA_CARD_NAMES.update({
    ("0x8086", "0x09c4"): "Intel PAC with Arria 10 GX",
    ("0x8086", "0x0b2b"): "Intel FPGA PAC D5005",
    ("0x8086", "0x0b30"): "Intel FPGA PAC N3000",
})  # fmt: skip
FPGA_TOOLS = (("xbutil", ["examine"]), ("fpgainfo", ["fme"]))


def mib_to_bytes(text):
    return int(float(text) * MIB)


# GPU key, nvidia-smi --query-gpu field, converter of its csv text (None = not a GPU key)
SMI_COLUMNS = (
    ("index", "index", int),
    ("uuid", "uuid", str),
    ("name", "name", str),
    ("pci_bus_id", "pci.bus_id", str),
    ("memory_total_bytes", "memory.total", mib_to_bytes),
    ("memory_used_bytes", "memory.used", mib_to_bytes),
    ("utilization_pct", "utilization.gpu", float),
    ("memory_utilization_pct", "utilization.memory", float),
    ("temperature_c", "temperature.gpu", float),
    ("power_w", "power.draw", float),
    ("power_limit_w", "power.limit", float),
    ("compute_capability", "compute_cap", str),
    ("mig_mode", "mig.mode.current", str.lower),
    ("ecc_uncorrected", "ecc.errors.uncorrected.volatile.total", int),
    (None, "driver_version", str),
)
GPU_FIELDS = [key for key, _, _ in SMI_COLUMNS if key and key != "index"]
SMI_APP_FIELDS = "gpu_uuid,pid,process_name,used_memory"
SMI_NULLS = ("", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]")
NO_DRIVER = {"driver_version": None, "cuda_version": None, "source": None}
CPU_FIELDS = ("model", "cores", "threads", "usable_threads", "load", "freq_mhz", "max_freq_mhz")


# ---------------------------------------------------------------- small helpers


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


# ---------------------------------------------------------------- os


def read_distro(host):
    for name in ("/etc/os-release", "/usr/lib/os-release"):
        for line in (read_text(host.path(name)) or "").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "PRETTY_NAME":
                return value.strip().strip("\"'") or None
    host.unavailable["distro"] = "no PRETTY_NAME in %s" % host.path("/etc/os-release")
    return None


def read_os(host):
    uname = os.uname()
    distro = read_distro(host)
    return {
        "os": {"system": uname.sysname, "release": uname.release, "version": uname.version,
               "machine": uname.machine, "distro": distro},
        "python": {"version": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable},
    }  # fmt: skip


# ---------------------------------------------------------------- cpu / memory


def parse_cpuinfo(text):
    """/proc/cpuinfo -> one dict per blank-line separated block."""
    blocks, current = [], {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
        elif not line.strip() and current:
            blocks.append(current)
            current = {}
    return [*blocks, current] if current else blocks


def read_cpu_freq(host, blocks):
    """(current MHz, max MHz) from sysfs cpufreq (kHz), else cpuinfo 'cpu MHz' (what psutil
    does too, so it is read from files here even when psutil is present)."""
    cpufreq = host.path("/sys/devices/system/cpu/cpu0/cpufreq")
    khz = convert(read_line(cpufreq, "scaling_cur_freq"))
    current = khz / 1000.0 if khz else None
    if current is None and blocks:
        current = convert(blocks[0].get("cpu MHz"), float)
    khz = convert(read_line(cpufreq, "cpuinfo_max_freq"))
    maximum = khz / 1000.0 if khz else None
    if current is None or maximum is None:
        host.unavailable["cpu_freq"] = "no cpufreq data in %s (usual in virtual machines)" % cpufreq
    return current, maximum


def read_cpu(host):
    cpuinfo = host.path("/proc/cpuinfo")
    blocks = parse_cpuinfo(read_text(cpuinfo))
    ps = host.psutil
    pairs = {(b.get("physical id"), b.get("core id")) for b in blocks if "core id" in b}
    cores = (ps.cpu_count(logical=False) if ps else None) or len(pairs) or None
    threads = (ps.cpu_count(logical=True) if ps else None) or sum("processor" in b for b in blocks)
    threads = threads or os.cpu_count()
    if cores is None:
        host.unavailable["cpu_cores"] = "no physical id/core id in %s" % cpuinfo
    usable = threads
    if host.real_root and hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError) as exc:
        load = None
        host.unavailable["cpu_load"] = "load average not available (%s)" % exc
    freq, max_freq = read_cpu_freq(host, blocks)
    model = next((b["model name"] for b in blocks if b.get("model name")), None)
    return {
        "cpu": {"model": model, "cores": cores, "threads": threads, "usable_threads": usable,
                "load": load, "freq_mhz": freq, "max_freq_mhz": max_freq}
    }  # fmt: skip


def read_memory(host):
    """psutil.virtual_memory, else ROOT/proc/meminfo MemTotal/MemAvailable (kB)."""
    if host.psutil:
        vm = host.psutil.virtual_memory()
        return {"memory": {"total_bytes": int(vm.total), "available_bytes": int(vm.available)}}
    path = host.path("/proc/meminfo")
    info = {}
    for line in (read_text(path) or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and convert(parts[1]) is not None:
            info[parts[0]] = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if available is None and total is not None:  # kernels before 3.14
        available = sum(info.get(key, 0) for key in ("MemFree", "Buffers", "Cached"))
    if total is None:
        host.unavailable["memory"] = "no MemTotal in %s" % path
    return {"memory": {"total_bytes": total, "available_bytes": available}}


# ---------------------------------------------------------------- disks


def mount_point(host, path):
    """Longest mount point in ROOT/proc/mounts containing path (by whole path components)."""
    best = None
    for line in (read_text(host.path("/proc/mounts")) or "").splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        # /proc/mounts writes space, tab, newline and backslash as octal escapes
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(best)):
            best = mount
    return best


def read_disks(host):
    """The data dir's filesystem; left out (with a reason) when it cannot be measured."""
    path = os.path.realpath(host.data_dir)
    try:
        st = os.statvfs(path)
    except OSError as exc:
        host.unavailable["disks"] = "statvfs(%s) failed: %s" % (path, exc)
        return {"disks": []}
    disk = {"path": host.data_dir, "role": "data", "mount": mount_point(host, path)}
    disk.update(total_bytes=st.f_blocks * st.f_frsize, free_bytes=st.f_bavail * st.f_frsize)
    return {"disks": [disk]}


# ---------------------------------------------------------------- pci sysfs


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


# ---------------------------------------------------------------- gpus


def empty_gpu(index):
    return dict({"index": index}, **dict.fromkeys(GPU_FIELDS), processes=[])


def nv(func, *args):
    """Call one NVML function; NotSupported (or any other NVML error) becomes None."""
    try:
        return func(*args)
    except Exception:
        return None


def nvml_ecc(nvml, handle):
    kind = getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
    for counter in (getattr(nvml, "NVML_VOLATILE_ECC", 0), getattr(nvml, "NVML_AGGREGATE_ECC", 1)):
        value = nv(nvml.nvmlDeviceGetTotalEccErrors, handle, kind, counter)
        if value is not None:
            return int(value)
    return None


def nvml_processes(host, nvml, handle):
    seen = {}
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for proc in nv(getattr(nvml, getter), handle) or []:
            used = getattr(proc, "usedGpuMemory", None)
            if used is not None and used >= 2**63:  # NVML_VALUE_NOT_AVAILABLE
                used = None
            name = read_line(host.path("/proc/%d/comm" % proc.pid))
            seen.setdefault(proc.pid, {"pid": proc.pid, "name": name, "used_memory_bytes": used})
    return list(seen.values())


def gpu_from_nvml(host, nvml, index):
    gpu = empty_gpu(index)
    handle = nv(nvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        host.unavailable["gpus[%d]" % index] = "NVML cannot open GPU %d" % index
        return gpu
    mem = nv(nvml.nvmlDeviceGetMemoryInfo, handle)
    util = nv(nvml.nvmlDeviceGetUtilizationRates, handle)
    capability = nv(nvml.nvmlDeviceGetCudaComputeCapability, handle)
    mig = nv(nvml.nvmlDeviceGetMigMode, handle)  # [current, pending]
    power = nv(nvml.nvmlDeviceGetPowerUsage, handle)  # mW
    limit = nv(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)  # mW
    gpu.update(
        uuid=as_text(nv(nvml.nvmlDeviceGetUUID, handle)),
        name=as_text(nv(nvml.nvmlDeviceGetName, handle)),
        pci_bus_id=as_text(getattr(nv(nvml.nvmlDeviceGetPciInfo, handle), "busId", None)),
        memory_total_bytes=getattr(mem, "total", None),
        memory_used_bytes=getattr(mem, "used", None),
        utilization_pct=convert(getattr(util, "gpu", None), float),
        memory_utilization_pct=convert(getattr(util, "memory", None), float),
        temperature_c=convert(nv(nvml.nvmlDeviceGetTemperature, handle, 0), float),  # 0: GPU
        power_w=None if power is None else power / 1000.0,
        power_limit_w=None if limit is None else limit / 1000.0,
        compute_capability="%d.%d" % tuple(capability[:2]) if capability else None,
        mig_mode=None if not mig else ("enabled" if mig[0] == 1 else "disabled"),
        ecc_uncorrected=nvml_ecc(nvml, handle),
        processes=nvml_processes(host, nvml, handle),
    )
    return gpu


def gpus_from_pynvml(host, reasons):
    """(gpus, driver) from NVML, or None with the reason appended to reasons."""
    if env_flag("LEPTON_AGENT_NO_PYNVML"):
        reasons.append("NVML not available (disabled by LEPTON_AGENT_NO_PYNVML)")
        return None
    import warnings

    try:
        with warnings.catch_warnings():  # the old 'pynvml' package warns on import
            warnings.simplefilter("ignore")
            import pynvml as nvml
    except Exception as exc:
        reasons.append("NVML not available (pynvml not importable: %s)" % exc)
        return None
    try:
        nvml.nvmlInit()
    except Exception as exc:
        reasons.append("NVML not available (%s)" % (str(exc) or type(exc).__name__))
        return None
    try:
        cuda = nv(nvml.nvmlSystemGetCudaDriverVersion)  # 12040 -> "12.4"
        driver = {
            "driver_version": as_text(nv(nvml.nvmlSystemGetDriverVersion)),
            "cuda_version": "%d.%d" % (cuda // 1000, cuda % 1000 // 10) if cuda else None,
            "source": "pynvml",
        }
        count = nvml.nvmlDeviceGetCount()
        return [gpu_from_nvml(host, nvml, index) for index in range(count)], driver
    except Exception as exc:
        reasons.append("NVML failed (%s: %s)" % (type(exc).__name__, exc))
        return None
    finally:
        nv(nvml.nvmlShutdown)


def smi_csv(text):
    """nvidia-smi csv rows with '[N/A]'-like cells as None."""
    import csv

    for row in csv.reader((text or "").splitlines(), skipinitialspace=True):
        if row and row[0].strip():
            yield [None if cell.strip().lower() in SMI_NULLS else cell.strip() for cell in row]


def query_smi_gpus(smi):
    """Run --query-gpu, dropping fields an older nvidia-smi rejects -> (rc, out, err, columns)."""
    columns = list(SMI_COLUMNS)
    while True:
        query = "--query-gpu=" + ",".join(field for _, field, _ in columns)
        rc, out, err = run_tool([smi, query, "--format=csv,noheader,nounits"])
        bad = re.search(r'Field "([^"]+)" is not a valid field', out + err)
        droppable = [c for c in columns[1:] if bad and c[1] == bad.group(1)]
        if rc == 0 or not droppable:
            return rc, out, err, columns
        columns.remove(droppable[0])


def smi_processes(host, smi, gpus):
    rc, out, err = run_tool(
        [smi, "--query-compute-apps=" + SMI_APP_FIELDS, "--format=csv,noheader,nounits"]
    )
    if rc != 0:
        reason = "nvidia-smi --query-compute-apps failed (%s)" % first_line(err or out)
        host.unavailable["gpu_processes"] = reason
        return
    by_uuid = {gpu["uuid"]: gpu for gpu in gpus}
    for uuid, pid, name, used in ((row + [None] * 4)[:4] for row in smi_csv(out)):
        if uuid in by_uuid and convert(pid) is not None:
            used = convert(used, mib_to_bytes)
            process = {"pid": int(pid), "name": name, "used_memory_bytes": used}
            by_uuid[uuid]["processes"].append(process)


def gpus_from_nvidia_smi(host, reasons):
    import shutil

    smi = shutil.which("nvidia-smi")
    if not smi:
        reasons.append("nvidia-smi not on PATH")
        return None
    rc, out, err, columns = query_smi_gpus(smi)
    if rc != 0:
        reasons.append("nvidia-smi failed (%s)" % first_line(out + "\n" + err))
        return None
    gpus, driver = [], dict(NO_DRIVER, source="nvidia-smi")
    for row in smi_csv(out):
        gpu = empty_gpu(len(gpus))
        for position, (key, field, kind) in enumerate(columns):
            value = convert(row[position] if position < len(row) else None, kind)
            if key and (key != "index" or value is not None):
                gpu[key] = value
            elif field == "driver_version":
                driver["driver_version"] = driver["driver_version"] or value
        gpus.append(gpu)
    if gpus:
        smi_processes(host, smi, gpus)
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", run_tool([smi])[1] or "")
    driver["cuda_version"] = cuda.group(1) if cuda else None
    return gpus, driver


def read_gpus(host):
    reasons = []
    found = gpus_from_pynvml(host, reasons) or gpus_from_nvidia_smi(host, reasons)
    if found is None:
        _, functions = host.pci_functions()
        nvidia = [
            f for f in functions or []
            if f["vendor"] == NVIDIA_VENDOR and (f["class"] or "").startswith("0x03")
        ]  # fmt: skip
        reason = " and ".join(reasons)
        if nvidia:
            reason += "; %d NVIDIA PCI device(s) present without a usable driver" % len(nvidia)
        host.unavailable["gpus"] = reason
        return {"gpus": [], "gpu_driver": dict(NO_DRIVER)}
    gpus, driver = found
    if not gpus:
        host.unavailable["gpus"] = "%s reports no GPUs" % driver["source"]
    return {"gpus": gpus, "gpu_driver": driver}


# ---------------------------------------------------------------- fpgas


def is_fpga_function(function):
    """FPGA vendors (bridges excepted) or class 0x1200xx processing accelerator."""
    pci_class = function["class"] or ""
    if pci_class.startswith("0x06"):
        return False
    return function["vendor"] in FPGA_VENDORS or pci_class.startswith("0x1200")


def fpga_card(index, slot, functions):
    """One physical card: identity of its first function, the list of all functions."""
    first = functions[0]
    numa = convert(read_line(first["dir"], "numa_node"))
    per_function = {
        f["bdf"]: {"device_id": f["device"], "class": f["class"], "driver": pci_driver(f["dir"])}
        for f in functions
    }
    return {
        "index": index,
        "slot": slot,
        "vendor_id": first["vendor"],
        "vendor": VENDOR_NAMES.get(first["vendor"]),
        "device_id": first["device"],
        "class": first["class"],
        "functions": [f["bdf"] for f in functions],
        "driver": pci_driver(first["dir"]),
        "numa_node": numa if numa is not None and numa >= 0 else None,
        "name": FPGA_CARD_NAMES.get((first["vendor"], first["device"])),
        "details": {"functions": per_function},
    }


def read_fpga_cards(functions):
    slots = {}  # "0000:3b:00" -> its FPGA functions
    for function in functions:
        if is_fpga_function(function):
            slots.setdefault(function["bdf"].rsplit(".", 1)[0], []).append(function)
    return [fpga_card(i, slot, slots[slot]) for i, slot in enumerate(sorted(slots))]


def read_fpga_managers(host):
    base = host.path("/sys/class/fpga_manager")
    return [
        {
            "name": read_line(base, device, "name") or device,
            "device": device,
            "state": read_line(base, device, "state"),
        }
        for device in (sorted(os.listdir(base)) if os.path.isdir(base) else [])
    ]


def read_fpga_tools():
    """First lines of `xbutil examine` / `fpgainfo fme` for the tools that are on PATH."""
    import shutil

    texts = {}
    for tool, args in FPGA_TOOLS:
        exe = shutil.which(tool)
        if exe:
            rc, out, err = run_tool([exe, *args])
            text = "\n".join((out if out.strip() else err).splitlines()[:TOOL_TEXT_LINES])
            texts[tool] = text if rc == 0 else "(%s exited %s)\n%s" % (tool, rc, text)
    return texts


def read_fpgas(host):
    base, functions = host.pci_functions()
    result = {"fpgas": read_fpga_cards(functions or []), "fpga_managers": read_fpga_managers(host)}
    tools = read_fpga_tools()
    if tools:
        result["fpga_tools"] = tools
    if not result["fpgas"] and not result["fpga_managers"]:
        if functions is None:
            host.unavailable["fpgas"] = "no PCI sysfs at %s" % base
        else:
            host.unavailable["fpgas"] = "no FPGA found (scanned %d PCI devices)" % len(functions)
    return result


# ---------------------------------------------------------------- the document

# (section, reader, what the document holds when the reader raises)
SECTIONS = (
    ("os", read_os, {"os": None, "python": None}),
    ("cpu", read_cpu, {"cpu": dict(dict.fromkeys(CPU_FIELDS), threads=os.cpu_count())}),
    ("memory", read_memory, {"memory": {"total_bytes": None, "available_bytes": None}}),
    ("disks", read_disks, {"disks": []}),
    ("gpus", read_gpus, {"gpus": [], "gpu_driver": NO_DRIVER}),
    ("fpgas", read_fpgas, {"fpgas": [], "fpga_managers": []}),
)


def default_data_dir():
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.expanduser("~/.local/share")
    return os.path.join(base, "leptonctl")


def probe(root, data_dir):
    """Build the schema-1 document. Every section is isolated from the others."""
    started = time.perf_counter()
    host = Host(root, data_dir)
    doc = {"schema": SCHEMA, "agent_version": AGENT_VERSION, "time": time.time()}
    doc.update(probe_ms=None, hostname=os.uname().nodename)
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        host.unavailable["data_dir"] = "cannot create data dir %s: %s" % (data_dir, exc)
    failing = os.environ.get("LEPTON_AGENT_FAIL_SECTIONS", "").split(",")
    for name, reader, fallback in SECTIONS:
        try:
            if name in failing:
                raise RuntimeError("injected failure (LEPTON_AGENT_FAIL_SECTIONS)")
            doc.update(reader(host))
        except Exception as exc:
            doc.update(json.loads(json.dumps(fallback)))  # a fresh copy
            host.unavailable[name] = "probe failed: %s: %s" % (type(exc).__name__, exc)
    doc["unavailable"] = host.unavailable
    doc["probe_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
    return doc


def json_line(doc):
    return json.dumps(doc, separators=(",", ":"), default=str) + "\n"


def answer(line, root, data_dir):
    """One serve request line -> one reply dict (never raises)."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        return {"schema": SCHEMA, "error": "invalid JSON request: %s" % exc}
    if not isinstance(request, dict):
        return {"schema": SCHEMA, "error": "request must be a JSON object"}
    op = request.get("op")
    try:
        if op == "probe":
            reply = probe(root, data_dir)
        elif op == "ping":
            reply = {"schema": SCHEMA, "pong": True, "agent_version": AGENT_VERSION}
        elif op == "version":
            reply = {"schema": SCHEMA, "agent_version": AGENT_VERSION}
        else:
            reply = {"schema": SCHEMA, "error": "unknown op %r" % (op,)}
    except Exception as exc:
        reply = {"schema": SCHEMA, "error": "%s failed: %s: %s" % (op, type(exc).__name__, exc)}
    if "id" in request:
        reply["id"] = request["id"]
    return reply


def serve(root, data_dir, stdin, stdout):
    """Answer JSON-line requests until EOF."""
    try:
        for line in iter(stdin.readline, ""):
            if line.strip():
                stdout.write(json_line(answer(line, root, data_dir)))
                stdout.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="lepton_agent", description="leptonctl host agent")
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    for name, text in (("probe", "print one JSON probe document"), ("serve", "JSON-lines loop")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--data-dir", default=None, help="default: $XDG_DATA_HOME/leptonctl")
        sub.add_argument("--root", default="/", help="prefix for /proc, /sys and /etc reads")
    commands.add_parser("version", help="print the agent version as JSON")
    return parser


def main(argv=None):
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    if args.command == "version":
        sys.stdout.write(json_line({"schema": SCHEMA, "agent_version": AGENT_VERSION}))
        return 0
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or default_data_dir()))
    if args.command == "serve":
        return serve(args.root, data_dir, sys.stdin, sys.stdout)
    sys.stdout.write(json_line(probe(args.root, data_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
