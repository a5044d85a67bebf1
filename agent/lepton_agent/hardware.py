"""GPUs (pynvml, else nvidia-smi) and FPGAs (PCI sysfs, xbutil/fpgainfo) of the probe."""

from __future__ import annotations

import os
import re

from .common import MIB  # not wire: the probe path imports this module
from .sysinfo import (
    TOOL_TEXT_LINES,
    as_text,
    convert,
    env_flag,
    first_line,
    pci_driver,
    read_line,
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
    for gpu in gpus:
        gpu["numa_node"] = gpu_numa_node(host, gpu.get("pci_bus_id"))
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
