"""GPUs (NVML through nvml.py, else nvidia-smi; Xids from the kernel log) and FPGAs (PCI
sysfs, xbutil/fpgainfo) of the probe."""

from __future__ import annotations

import os
import re

from . import nvml
from .common import MIB  # not wire: the probe path imports this module
from .nvml import BUS_ID_RE, clean_text, clean_uuid, empty_gpu, process_user
from .sysinfo import (
    TOOL_TEXT_LINES,
    convert,
    first_line,
    pci_driver,
    read_line,
    read_text,
    run_tool,
)

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


def capability(text):
    """nvidia-smi's compute_cap ("9.0"), or None when it is not one."""
    return text if re.match(r"^\d{1,2}\.\d{1,2}$", str(text)) else None


def mig_mode(text):
    """nvidia-smi's mig.mode.current (Enabled/Disabled) in the probe's words, else None."""
    return {"enabled": "enabled", "disabled": "disabled"}.get(str(text).strip().lower())


def yes_no(text):
    """nvidia-smi's Yes/No (or 1/0) -> bool; anything else -> None."""
    return {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}.get(
        str(text).strip().lower()
    )


# GPU key ("health.x": a key of its health), nvidia-smi --query-gpu field, converter of its
# csv text (None = not a GPU key)
SMI_COLUMNS = (
    ("index", "index", int),
    ("uuid", "uuid", clean_uuid),
    ("name", "name", clean_text),
    ("pci_bus_id", "pci.bus_id", str),
    ("memory_total_bytes", "memory.total", mib_to_bytes),
    ("memory_used_bytes", "memory.used", mib_to_bytes),
    ("utilization_pct", "utilization.gpu", float),
    ("memory_utilization_pct", "utilization.memory", float),
    ("temperature_c", "temperature.gpu", float),
    ("power_w", "power.draw", float),
    ("power_limit_w", "power.limit", float),
    ("compute_capability", "compute_cap", capability),
    ("mig_mode", "mig.mode.current", mig_mode),
    ("ecc_uncorrected", "ecc.errors.uncorrected.volatile.total", int),
    ("health.retired_pages_sbe", "retired_pages.sbe", int),
    ("health.retired_pages_dbe", "retired_pages.dbe", int),
    ("health.retired_pages_pending", "retired_pages.pending", yes_no),
    (None, "driver_version", str),
)


SMI_APP_FIELDS = "gpu_uuid,pid,process_name,used_memory"


SMI_REMAP_FIELDS = (
    "gpu_uuid,remapped_rows.correctable,remapped_rows.uncorrectable,remapped_rows.pending,"
    "remapped_rows.failure"
)


SMI_NULLS = ("", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]")


# nvidia-smi topo -m words (SOC: what drivers before 396 wrote for SYS)
SMI_PATHS = {"PIX": "PIX", "PXB": "PXB", "PHB": "PHB", "NODE": "NODE", "SYS": "SYS", "SOC": "SYS"}


NO_DRIVER = {"driver_version": None, "cuda_version": None, "source": None}


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
    by_uuid = {gpu["uuid"]: gpu for gpu in gpus if gpu["uuid"]}
    users = {}
    for uuid, pid, name, used in ((row + [None] * 4)[:4] for row in smi_csv(out)):
        pid = convert(pid)
        if uuid in by_uuid and pid is not None and pid > 0:
            uid, user = process_user(host, pid, users)
            by_uuid[uuid]["processes"].append({
                "pid": pid, "name": clean_text(name, 64),
                "used_memory_bytes": convert(used, mib_to_bytes), "uid": uid, "user": user,
            })  # fmt: skip


def smi_remapped_rows(host, smi, gpus):
    rc, out, err = run_tool(
        [smi, "--query-remapped-rows=" + SMI_REMAP_FIELDS, "--format=csv,noheader"]
    )
    by_uuid = {gpu["uuid"]: gpu for gpu in gpus if gpu["uuid"]}
    for uuid, _, _, pending, failed in ((row + [None] * 5)[:5] for row in smi_csv(out)):
        if rc == 0 and uuid in by_uuid:
            health = by_uuid[uuid]["health"]
            health["remapped_rows_pending"] = convert(pending, yes_no)
            health["remapped_rows_failed"] = convert(failed, yes_no)
    why = "nvidia-smi --query-remapped-rows: %s" % (
        "not reported" if rc == 0 else first_line(err or out)
    )
    for gpu in gpus:
        for field in ("remapped_rows_pending", "remapped_rows_failed"):
            if gpu["health"][field] is None:
                host.unavailable["gpus[%d].%s" % (gpu["index"], field)] = why


def parse_smi_mig_list(text):
    """nvidia-smi -L -> {GPU index: [MIG devices]} (profile, device index and UUID)."""
    devices, current = {}, None
    for line in (text or "").splitlines():
        gpu = re.match(r"^GPU (\d+): ", line)
        mig = re.match(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)\s]+)\)", line)
        if gpu:
            current = int(gpu.group(1))
        elif mig and current is not None:
            devices.setdefault(current, []).append({
                "uuid": clean_uuid(mig.group(3)), "index": int(mig.group(2)),
                "profile": clean_text(mig.group(1), 32), "gpu_instance_id": None,
                "compute_instance_id": None, "memory_total_bytes": None,
                "memory_used_bytes": None, "processes": [],
            })  # fmt: skip
    return devices


def parse_smi_topology(text):
    """nvidia-smi topo -m -> {(GPU index, peer index): (NVLinks, path)}."""
    header, pairs = None, {}
    for line in (text or "").splitlines():
        cells = [cell.strip() for cell in line.split("\t")]
        if header is None and "GPU0" in cells:
            header = cells
            continue
        row = re.match(r"^GPU(\d+)$", cells[0]) if header else None
        if not row:
            continue
        for column, cell in zip(header[1:], cells[1:]):
            peer = re.match(r"^GPU(\d+)$", column)
            links = re.match(r"^NV(\d+)$", cell)
            if peer and int(peer.group(1)) != int(row.group(1)) and (links or cell in SMI_PATHS):
                pair = (int(row.group(1)), int(peer.group(1)))
                pairs[pair] = (int(links.group(1)), "NV") if links else (0, SMI_PATHS[cell])
    return pairs


def smi_topology(host, smi, gpus):
    rc, out, err = run_tool([smi, "topo", "-m"])
    by_index = {gpu["index"]: gpu for gpu in gpus}
    for (index, peer), (links, path) in sorted(
        (parse_smi_topology(out) if rc == 0 else {}).items()
    ):
        if index in by_index and peer in by_index and by_index[peer]["uuid"]:
            by_index[index]["topology"][by_index[peer]["uuid"]] = {"nvlink": links, "path": path}
    why = first_line(err or out) if rc != 0 else "no GPU pairs in its output"
    for gpu in gpus:
        if not gpu["topology"]:
            host.unavailable["gpus[%d].topology" % gpu["index"]] = "nvidia-smi topo -m: " + why


def smi_gpu(row, columns, driver):
    gpu = empty_gpu(None)
    for position, (key, field, kind) in enumerate(columns):
        value = convert(row[position] if position < len(row) else None, kind)
        if key and key.startswith("health."):
            gpu["health"][key[7:]] = value
        elif key:
            gpu[key] = value
        elif field == "driver_version":
            driver["driver_version"] = driver["driver_version"] or clean_text(value, 32)
    health = gpu["health"]
    sbe, dbe = health.pop("retired_pages_sbe", None), health.pop("retired_pages_dbe", None)
    health["retired_pages"] = None if sbe is None and dbe is None else (sbe or 0) + (dbe or 0)
    health["ecc_uncorrected_volatile"] = gpu["ecc_uncorrected"]
    if gpu["pci_bus_id"] is not None and not BUS_ID_RE.match(gpu["pci_bus_id"]):
        gpu["pci_bus_id"] = None
    return gpu


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
        gpu = smi_gpu(row, columns, driver)
        if gpu["index"] is None:
            gpu["index"] = len(gpus)
        gpus.append(gpu)
    for gpu in gpus:
        for field in ("ecc_uncorrected_volatile", "retired_pages", "retired_pages_pending"):
            if gpu["health"][field] is None:
                key = "gpus[%d].%s" % (gpu["index"], field)
                host.unavailable[key] = "not reported by nvidia-smi --query-gpu"
    if gpus:
        smi_processes(host, smi, gpus)
        smi_remapped_rows(host, smi, gpus)
    if any(gpu["mig_mode"] == "enabled" for gpu in gpus):
        rc, out, err = run_tool([smi, "-L"])
        migs = parse_smi_mig_list(out) if rc == 0 else {}
        for gpu in gpus:
            if gpu["mig_mode"] == "enabled":
                gpu["mig_devices"] = migs.get(gpu["index"], [])
    if len(gpus) > 1:
        smi_topology(host, smi, gpus)
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", run_tool([smi])[1] or "")
    driver["cuda_version"] = cuda.group(1) if cuda else None
    return gpus, driver


KMSG_LIMIT = 8 << 20  # bytes of kernel log read at most
XID_LIMIT = 32  # Xid messages kept per GPU, the newest
XID_RE = re.compile(
    r"NVRM: Xid \(PCI:([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})(?:\.[0-7])?\): "
    r"(\d+)(?:,\s*)?(.*)"
)


def bus_key(bus_id):
    """ "00000000:18:00.0" or "0000:18:00" -> (domain, bus, device) as ints, or None."""
    match = re.match(r"^([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})", str(bus_id or ""))
    return tuple(int(part, 16) for part in match.groups()) if match else None


def read_kmsg(path):
    """The kernel log's buffered records, read without blocking (/dev/kmsg answers one record
    per read and EAGAIN at the end; EPIPE when records were overwritten meanwhile)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    chunks, size = [], 0
    try:
        for _ in range(1 << 20):
            try:
                chunk = os.read(fd, 16384)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue
            if not chunk or size > KMSG_LIMIT:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def parse_xids(text, now):
    """{(domain, bus, device): [{"code", "age_s", "text"}]} of NVRM Xid records; age from the
    record's timestamp (microseconds of CLOCK_MONOTONIC) to ``now``."""
    xids = {}
    for line in text.splitlines():
        if "Xid" not in line:
            continue
        head, sep, message = line.partition(";")
        match = XID_RE.search(message) if sep and not line.startswith(" ") else None
        if not match:
            continue
        fields = head.split(",")
        stamp = convert(fields[2]) if len(fields) > 2 else None
        age = None if stamp is None else round(max(now - stamp / 1e6, 0.0), 1)
        key = tuple(int(part, 16) for part in match.groups()[:3])
        entry = {"code": int(match.group(4)), "age_s": age, "text": clean_text(match.group(5), 200)}
        xids.setdefault(key, []).append(entry)
    return xids


def add_xids(host, gpus):
    """Each GPU's health.xid from the kernel log (None, with the reason, where unreadable)."""
    import time

    path = host.path("/dev/kmsg")
    try:
        xids = parse_xids(read_kmsg(path), time.monotonic())
    except OSError as exc:
        why = "cannot read %s (%s)" % (path, exc.strerror or exc)
        for gpu in gpus:
            host.unavailable["gpus[%d].xid" % gpu["index"]] = why
        return
    for gpu in gpus:
        key = bus_key(gpu["pci_bus_id"])
        if key is None:
            host.unavailable["gpus[%d].xid" % gpu["index"]] = "no PCI bus id to match Xids"
        else:
            gpu["health"]["xid"] = xids.get(key, [])[-XID_LIMIT:]


JOB_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # wire.JOB_ID_PATTERN (wire: not on this path)


def job_groups(data_dir):
    """{process group: job id} of the jobs under DATA/jobs that have no end record yet (the
    supervisor starts each job as the leader of its own group: pgid in state.json)."""
    import json

    base, groups = os.path.join(data_dir, "jobs"), {}
    try:
        names = os.listdir(base)
    except OSError:
        return groups
    for name in names:
        if not JOB_ID_RE.match(name) or name in (".", ".."):
            continue
        if os.path.lexists(os.path.join(base, name, "end.json")):
            continue
        try:
            state = json.loads(read_text(os.path.join(base, name, "state.json")) or "null")
        except ValueError:
            continue
        pgid = state.get("pgid") if isinstance(state, dict) else None
        if isinstance(pgid, int) and not isinstance(pgid, bool) and pgid > 1:
            groups[pgid] = name
    return groups


def process_group(host, pid):
    """The process group of a pid (/proc/<pid>/stat: state, ppid, pgrp after the name)."""
    fields = (read_text(host.path("/proc/%d/stat" % pid)) or "").rpartition(")")[2].split()
    return convert(fields[2]) if len(fields) > 2 else None


def tag_job_processes(host, gpus):
    """Each GPU (and MIG device) process gets "job": the id of the leptonctl job whose process
    group it is in, or None (a process that is not a job's: foreign to the scheduler)."""
    processes = [p for gpu in gpus for p in gpu["processes"]]
    processes += [p for gpu in gpus for mig in gpu["mig_devices"] for p in mig["processes"]]
    groups = job_groups(host.data_dir) if processes else {}
    for process in processes:
        process["job"] = groups.get(process_group(host, process["pid"])) if groups else None


def read_gpus(host):
    reasons = []
    found = nvml.read_gpus(host, reasons) or gpus_from_nvidia_smi(host, reasons)
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
    for gpu in gpus:
        gpu["numa_node"] = gpu_numa_node(host, gpu.get("pci_bus_id"))
    if gpus:
        add_xids(host, gpus)
        tag_job_processes(host, gpus)
    return {"gpus": gpus, "gpu_driver": driver}


def gpu_numa_node(host, bus_id):
    """The NUMA node of a GPU from sysfs (NVIDIA writes 00000000:3B:00.0, sysfs names it
    0000:3b:00.0), or None (unknown, or -1: no NUMA)."""
    match = re.fullmatch(r"([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])",
                         str(bus_id or ""))  # fmt: skip
    if match is None:
        return None
    domain, bus, slot, function = match.groups()
    name = "%04x:%s:%s.%s" % (int(domain, 16), bus.lower(), slot.lower(), function)
    node = convert(read_line(host.path("/sys/bus/pci/devices/%s/numa_node" % name)))
    return node if node is not None and node >= 0 else None


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
