"""NVML through ctypes: the GPUs of the probe and of the dashboard's samples.

libnvidia-ml.so.1 comes with the NVIDIA driver; it is loaded with ctypes (no pynvml on the
hosts), and each call is declared with NVML's own signature and struct layouts. Versioned
calls are resolved newest first (nvmlDeviceGetComputeRunningProcesses_v3, _v2, then the
first version with its own struct), so old drivers work too. Every NVML error becomes data:
the field is None and its reason (nvmlErrorString's words) goes to ``unavailable`` under
"gpus[<i>].<field>"; nothing raises out of ``read_gpus``.

Each GPU is the contract of docs/protocol.md: today's fields, processes with their user,
MIG devices, NVLink/PCIe topology to its peers and health (ECC, retired pages, remapped rows;
hardware.py adds the XIDs of the kernel log). ``LEPTON_AGENT_NO_NVML=1`` turns NVML off.
"""

from __future__ import annotations

import contextlib
import math
import re

from .sysinfo import env_flag, read_text

LIBRARY = "libnvidia-ml.so.1"
TEXT_LIMIT = 96  # NVML's longest name/UUID buffer
UUID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.:-]{0,95}$")
BUS_ID_RE = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
NOT_AVAILABLE = (1 << 64) - 1  # NVML_VALUE_NOT_AVAILABLE for unsigned long long
NO_INSTANCE = 0xFFFFFFFF

# NVML return codes the agent acts on
SUCCESS, INVALID_ARGUMENT, NOT_SUPPORTED, NOT_FOUND, INSUFFICIENT_SIZE = 0, 2, 3, 6, 7
FUNCTION_NOT_FOUND = 13

# nvmlGpuTopologyLevel_t -> nvidia-smi topo -m's word
TOPOLOGY_PATHS = {0: "PIX", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
NVLINK_DEVICE_GPU, NVLINK_DEVICE_SWITCH = 0, 2
MAX_NVLINKS = 36  # NVML_NVLINK_MAX_LINKS of today's headers; older GPUs stop earlier

HEALTH_FIELDS = (
    "ecc_uncorrected_volatile",
    "retired_pages",
    "retired_pages_pending",
    "remapped_rows_pending",
    "remapped_rows_failed",
    "xid",
)
GPU_FIELDS = (
    "uuid", "name", "pci_bus_id", "memory_total_bytes", "memory_used_bytes", "utilization_pct",
    "memory_utilization_pct", "temperature_c", "power_w", "power_limit_w", "compute_capability",
    "mig_mode", "ecc_uncorrected",
)  # fmt: skip


def empty_gpu(index):
    """One GPU of the probe with every fact unknown."""
    gpu = dict({"index": index}, **dict.fromkeys(GPU_FIELDS))
    gpu.update(processes=[], mig_devices=[], topology={}, health=dict.fromkeys(HEALTH_FIELDS))
    return gpu


def clean_text(value, limit=TEXT_LIMIT):
    """Text from a host, safe to show: decoded, control characters replaced, bounded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None:
        return None
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value).strip())
    return text[:limit] or None


def clean_uuid(value):
    text = clean_text(value)
    return text if text and UUID_RE.match(text) else None


class NvmlError(Exception):
    def __init__(self, function, code, text):
        Exception.__init__(self, "%s: %s" % (function, text))
        self.function, self.code = function, code


def declare():
    """ctypes structs and the signature of each call the agent makes (name -> argtypes)."""
    import ctypes

    uint, ulonglong, c_int = ctypes.c_uint, ctypes.c_ulonglong, ctypes.c_int
    handle, ptr, text = ctypes.c_void_p, ctypes.POINTER, ctypes.c_char_p

    class Memory(ctypes.Structure):  # nvmlMemory_t
        _fields_ = [("total", ulonglong), ("free", ulonglong), ("used", ulonglong)]

    class Utilization(ctypes.Structure):  # nvmlUtilization_t
        _fields_ = [("gpu", uint), ("memory", uint)]

    pci_ids = [("domain", uint), ("bus", uint), ("device", uint), ("pciDeviceId", uint),
               ("pciSubSystemId", uint)]  # fmt: skip

    class PciInfo(ctypes.Structure):  # nvmlPciInfo_t of the _v3 calls (busId moved, 32 chars)
        _fields_ = [("busIdLegacy", ctypes.c_char * 16), *pci_ids, ("busId", ctypes.c_char * 32)]

    class PciInfoLegacy(ctypes.Structure):  # nvmlPciInfo_t of the first calls
        _fields_ = [("busId", ctypes.c_char * 16), *pci_ids, ("reserved", uint * 4)]

    class ProcessInfoV1(ctypes.Structure):  # nvmlProcessInfo_v1_t
        _fields_ = [("pid", uint), ("usedGpuMemory", ulonglong)]

    class ProcessInfoV2(ctypes.Structure):  # nvmlProcessInfo_v2_t, also the _v3 calls' layout
        _fields_ = [("pid", uint), ("usedGpuMemory", ulonglong), ("gpuInstanceId", uint),
                    ("computeInstanceId", uint)]  # fmt: skip

    class Attributes(ctypes.Structure):  # nvmlDeviceAttributes_t
        _fields_ = [(name, uint) for name in (
            "multiprocessorCount", "sharedCopyEngineCount", "sharedDecoderCount",
            "sharedEncoderCount", "sharedJpegCount", "sharedOfaCount", "gpuInstanceSliceCount",
            "computeInstanceSliceCount")] + [("memorySizeMB", ulonglong)]  # fmt: skip

    structs = {"Memory": Memory, "Utilization": Utilization, "PciInfo": PciInfo,
               "PciInfoLegacy": PciInfoLegacy, "ProcessInfoV1": ProcessInfoV1,
               "ProcessInfoV2": ProcessInfoV2, "Attributes": Attributes}  # fmt: skip
    processes = {"ProcessInfoV1": (handle, ptr(uint), ptr(ProcessInfoV1)),
                 "ProcessInfoV2": (handle, ptr(uint), ptr(ProcessInfoV2))}  # fmt: skip
    signatures = {
        "nvmlInit_v2": (), "nvmlInit": (), "nvmlShutdown": (), "nvmlErrorString": (c_int,),
        "nvmlSystemGetDriverVersion": (text, uint),
        "nvmlSystemGetCudaDriverVersion_v2": (ptr(c_int),),
        "nvmlSystemGetCudaDriverVersion": (ptr(c_int),),
        "nvmlDeviceGetCount_v2": (ptr(uint),), "nvmlDeviceGetCount": (ptr(uint),),
        "nvmlDeviceGetHandleByIndex_v2": (uint, ptr(handle)),
        "nvmlDeviceGetHandleByIndex": (uint, ptr(handle)),
        "nvmlDeviceGetUUID": (handle, text, uint), "nvmlDeviceGetName": (handle, text, uint),
        "nvmlDeviceGetPciInfo_v3": (handle, ptr(PciInfo)),
        "nvmlDeviceGetPciInfo_v2": (handle, ptr(PciInfoLegacy)),
        "nvmlDeviceGetMemoryInfo": (handle, ptr(Memory)),
        "nvmlDeviceGetUtilizationRates": (handle, ptr(Utilization)),
        "nvmlDeviceGetTemperature": (handle, c_int, ptr(uint)),
        "nvmlDeviceGetPowerUsage": (handle, ptr(uint)),
        "nvmlDeviceGetEnforcedPowerLimit": (handle, ptr(uint)),
        "nvmlDeviceGetCudaComputeCapability": (handle, ptr(c_int), ptr(c_int)),
        "nvmlDeviceGetMigMode": (handle, ptr(uint), ptr(uint)),
        "nvmlDeviceGetTotalEccErrors": (handle, c_int, c_int, ptr(ulonglong)),
        "nvmlDeviceGetComputeRunningProcesses_v3": processes["ProcessInfoV2"],
        "nvmlDeviceGetComputeRunningProcesses_v2": processes["ProcessInfoV2"],
        "nvmlDeviceGetComputeRunningProcesses": processes["ProcessInfoV1"],
        "nvmlDeviceGetGraphicsRunningProcesses_v3": processes["ProcessInfoV2"],
        "nvmlDeviceGetGraphicsRunningProcesses_v2": processes["ProcessInfoV2"],
        "nvmlDeviceGetGraphicsRunningProcesses": processes["ProcessInfoV1"],
        "nvmlDeviceGetMaxMigDeviceCount": (handle, ptr(uint)),
        "nvmlDeviceGetMigDeviceHandleByIndex": (handle, uint, ptr(handle)),
        "nvmlDeviceGetGpuInstanceId": (handle, ptr(uint)),
        "nvmlDeviceGetComputeInstanceId": (handle, ptr(uint)),
        "nvmlDeviceGetAttributes_v2": (handle, ptr(Attributes)),
        "nvmlDeviceGetTopologyCommonAncestor": (handle, handle, ptr(c_int)),
        "nvmlDeviceGetNvLinkState": (handle, uint, ptr(c_int)),
        "nvmlDeviceGetNvLinkRemotePciInfo_v2": (handle, uint, ptr(PciInfo)),
        "nvmlDeviceGetNvLinkRemotePciInfo": (handle, uint, ptr(PciInfoLegacy)),
        "nvmlDeviceGetNvLinkRemoteDeviceType": (handle, uint, ptr(c_int)),
        "nvmlDeviceGetRetiredPages": (handle, c_int, ptr(uint), ptr(ulonglong)),
        "nvmlDeviceGetRetiredPagesPendingStatus": (handle, ptr(c_int)),
        "nvmlDeviceGetRemappedRows": (handle, ptr(uint), ptr(uint), ptr(uint), ptr(uint)),
    }  # fmt: skip
    return structs, signatures


class Nvml:
    """An initialised libnvidia-ml: ``call`` the first of several names it exports."""

    def __init__(self, lib, ctypes, structs, signatures):
        self.lib, self.ctypes, self.s, self.signatures = lib, ctypes, structs, signatures
        self.functions = {}

    def function(self, *names):
        """(name, declared function) of the first name the library exports, or None."""
        for name in names:
            if name not in self.functions:
                try:
                    fn = getattr(self.lib, name)
                except AttributeError:
                    fn = None
                if fn is not None:
                    fn.argtypes = self.signatures[name]
                    text = name == "nvmlErrorString"
                    fn.restype = self.ctypes.c_char_p if text else self.ctypes.c_int
                self.functions[name] = fn
            if self.functions[name] is not None:
                return name, self.functions[name]
        return None

    def error_text(self, code):
        found = self.function("nvmlErrorString")
        if found is None:
            return "NVML error %d" % code
        return clean_text(found[1](code)) or "NVML error %d" % code

    def call(self, names, *args):
        """Call the newest of ``names`` (a name or a tuple); an error raises NvmlError."""
        names = (names,) if isinstance(names, str) else names
        found = self.function(*names)
        if found is None:
            raise NvmlError(names[-1], FUNCTION_NOT_FOUND, "not in this driver's NVML")
        code = found[1](*args)
        if code != SUCCESS:
            raise NvmlError(found[0], code, self.error_text(code))
        return found[0]

    def out(self, kind=None):
        return (kind or self.ctypes.c_uint)()

    def ref(self, value):
        return self.ctypes.byref(value)

    def text(self, names, handle=None, size=TEXT_LIMIT):
        buf = self.ctypes.create_string_buffer(size)
        args = (buf, size) if handle is None else (handle, buf, size)
        self.call(names, *args)
        return buf.value

    def uint(self, names, *args):
        value = self.out()
        self.call(names, *args, self.ref(value))
        return value.value

    def int(self, names, *args):
        value = self.out(self.ctypes.c_int)
        self.call(names, *args, self.ref(value))
        return value.value

    def handle(self, names, *args):
        value = self.ctypes.c_void_p()
        self.call(names, *args, self.ref(value))
        return value

    def struct(self, names, kind, *args):
        value = self.out(self.s[kind])
        self.call(names, *args, self.ref(value))
        return value

    def shutdown(self):
        with contextlib.suppress(NvmlError):
            self.call("nvmlShutdown")


def open_nvml(path=LIBRARY):
    """(Nvml, None) initialised, or (None, why not)."""
    if env_flag("LEPTON_AGENT_NO_NVML"):
        return None, "NVML not available (disabled by LEPTON_AGENT_NO_NVML)"
    try:
        import ctypes

        lib = ctypes.CDLL(path)
        structs, signatures = declare()
    except (ImportError, OSError) as exc:
        return None, "NVML not available (%s)" % clean_text(exc, 200)
    nvml = Nvml(lib, ctypes, structs, signatures)
    try:
        nvml.call(("nvmlInit_v2", "nvmlInit"))
    except NvmlError as exc:
        return None, "NVML not available (%s)" % exc
    return nvml, None


def attempt(host, key, read, *args):
    """read(*args), or None with the NVML error under unavailable[key] (None key: silent)."""
    try:
        return read(*args)
    except NvmlError as exc:
        if key is not None:
            host.unavailable[key] = str(exc)
        return None


def canonical_bus(domain, bus, device):
    return (int(domain), int(bus), int(device))


def pci_info(nvml, handle):
    """(bus id text, (domain, bus, device)) of a device."""
    try:
        info = nvml.struct("nvmlDeviceGetPciInfo_v3", "PciInfo", handle)
    except NvmlError as exc:
        if exc.code != FUNCTION_NOT_FOUND:
            raise
        info = nvml.struct("nvmlDeviceGetPciInfo_v2", "PciInfoLegacy", handle)
    bus_id = clean_text(info.busId)
    bus_id = bus_id if bus_id and BUS_ID_RE.match(bus_id) else None
    return bus_id, canonical_bus(info.domain, info.bus, info.device)


def process_user(host, pid, cache):
    """(uid, user name) of a process from /proc/<pid>/status, None where unreadable."""
    uid = None
    for line in (read_text(host.path("/proc/%d/status" % pid)) or "").splitlines():
        if line.startswith("Uid:") and len(line.split()) > 1 and line.split()[1].isdigit():
            uid = int(line.split()[1])
    if uid is None:
        return None, None
    if uid not in cache:
        try:
            import pwd

            cache[uid] = clean_text(pwd.getpwuid(uid).pw_name, 64)
        except (ImportError, KeyError):
            cache[uid] = None
    return uid, cache[uid]


def read_processes(host, nvml, handle, users, key):
    """Compute and graphics processes of a GPU or MIG device, each pid once."""
    seen = {}
    for kind in ("Compute", "Graphics"):
        base = "nvmlDeviceGet%sRunningProcesses" % kind
        found = nvml.function(base + "_v3", base + "_v2", base)
        if found is None:
            continue
        layout = "ProcessInfoV1" if found[0] == base else "ProcessInfoV2"
        count = nvml.out()
        for _ in range(4):  # NVML's protocol: the count, then the array (processes come and go)
            rows = (nvml.s[layout] * max(count.value, 1))()
            code = found[1](handle, nvml.ref(count), rows)
            if code != INSUFFICIENT_SIZE:
                break
            count.value += 8
        if code != SUCCESS:
            host.unavailable[key] = "%s: %s" % (found[0], nvml.error_text(code))
            continue
        for row in list(rows)[: count.value]:
            used = None if row.usedGpuMemory == NOT_AVAILABLE else int(row.usedGpuMemory)
            if row.pid in seen:
                continue
            uid, user = process_user(host, row.pid, users)
            name = clean_text(read_text(host.path("/proc/%d/comm" % row.pid)), 64)
            seen[row.pid] = {"pid": int(row.pid), "name": name, "used_memory_bytes": used,
                             "uid": uid, "user": user}  # fmt: skip
    return list(seen.values())


def mig_profile(name, attributes):
    """nvidia-smi's profile name ("1g.10gb", "1c.3g.40gb"): from the MIG device's name
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb"), else from its slice counts and memory."""
    match = re.search(r"MIG\s+(\S+)$", name or "")
    if match:
        return match.group(1)
    if attributes is None or not attributes.gpuInstanceSliceCount:
        return None
    gis, cis = attributes.gpuInstanceSliceCount, attributes.computeInstanceSliceCount
    size = "%dg.%dgb" % (gis, math.ceil(attributes.memorySizeMB / 1024.0))
    return size if cis in (0, gis) else "%dc.%s" % (cis, size)


def read_mig_devices(host, nvml, handle, index, users):
    key = "gpus[%d].mig_devices" % index
    count = attempt(host, key, nvml.uint, "nvmlDeviceGetMaxMigDeviceCount", handle) or 0
    devices = []
    for position in range(count):
        try:
            mig = nvml.handle("nvmlDeviceGetMigDeviceHandleByIndex", handle, position)
        except NvmlError as exc:
            if exc.code not in (NOT_FOUND, INVALID_ARGUMENT):
                host.unavailable[key] = str(exc)
            continue
        name = clean_text(attempt(host, None, nvml.text, "nvmlDeviceGetName", mig))
        attributes = attempt(host, None, nvml.struct, "nvmlDeviceGetAttributes_v2", "Attributes",
                             mig)  # fmt: skip
        memory = attempt(host, None, nvml.struct, "nvmlDeviceGetMemoryInfo", "Memory", mig)
        devices.append({
            "uuid": clean_uuid(attempt(host, key, nvml.text, "nvmlDeviceGetUUID", mig)),
            "index": position,
            "profile": mig_profile(name, attributes),
            "gpu_instance_id": attempt(host, None, nvml.uint, "nvmlDeviceGetGpuInstanceId", mig),
            "compute_instance_id": attempt(host, None, nvml.uint,
                                           "nvmlDeviceGetComputeInstanceId", mig),
            "memory_total_bytes": None if memory is None else int(memory.total),
            "memory_used_bytes": None if memory is None else int(memory.used),
            "processes": read_processes(host, nvml, mig, users, key),
        })  # fmt: skip
    return devices


def retired_pages(nvml, handle):
    """Pages retired for multiple single-bit errors plus those for a double-bit error."""
    pages = 0
    for cause in (0, 1):
        count = nvml.out()
        try:  # a NULL array asks for the count
            nvml.call("nvmlDeviceGetRetiredPages", handle, cause, nvml.ref(count), None)
        except NvmlError as exc:
            if exc.code != INSUFFICIENT_SIZE:  # some drivers answer the size query this way
                raise
        pages += count.value
    return pages


def read_health(host, nvml, handle, index):
    """The contract's health facts but xid (hardware.py reads the kernel log)."""
    health = dict.fromkeys(HEALTH_FIELDS)
    key = "gpus[%d].%%s" % index
    ecc = nvml.out(nvml.ctypes.c_ulonglong)
    try:  # 1: NVML_MEMORY_ERROR_TYPE_UNCORRECTED, 0: NVML_VOLATILE_ECC
        nvml.call("nvmlDeviceGetTotalEccErrors", handle, 1, 0, nvml.ref(ecc))
        health["ecc_uncorrected_volatile"] = int(ecc.value)
    except NvmlError as exc:
        host.unavailable[key % "ecc_uncorrected_volatile"] = str(exc)
    try:
        health["retired_pages"] = retired_pages(nvml, handle)
    except NvmlError as exc:
        host.unavailable[key % "retired_pages"] = str(exc)
    pending = nvml.out(nvml.ctypes.c_int)
    try:
        nvml.call("nvmlDeviceGetRetiredPagesPendingStatus", handle, nvml.ref(pending))
        health["retired_pages_pending"] = bool(pending.value)
    except NvmlError as exc:
        host.unavailable[key % "retired_pages_pending"] = str(exc)
    rows = [nvml.out() for _ in range(4)]  # corrected, uncorrected, pending, failed
    try:
        nvml.call("nvmlDeviceGetRemappedRows", handle, *[nvml.ref(row) for row in rows])
        health["remapped_rows_pending"] = bool(rows[2].value)
        health["remapped_rows_failed"] = bool(rows[3].value)
    except NvmlError as exc:
        for field in ("remapped_rows_pending", "remapped_rows_failed"):
            host.unavailable[key % field] = str(exc)
    return health


def read_nvlinks(nvml, handle):
    """[(remote (domain, bus, device), remote type or None)] of the GPU's active NVLinks."""
    links = []
    for link in range(MAX_NVLINKS):
        state = nvml.out(nvml.ctypes.c_int)
        try:
            nvml.call("nvmlDeviceGetNvLinkState", handle, link, nvml.ref(state))
        except NvmlError as exc:
            if exc.code == NOT_SUPPORTED and link == 0:
                return []  # no NVLink on this GPU
            if exc.code in (INVALID_ARGUMENT, NOT_SUPPORTED):
                break  # past this GPU's last link
            raise
        if not state.value:
            continue
        try:
            info = nvml.struct("nvmlDeviceGetNvLinkRemotePciInfo_v2", "PciInfo", handle, link)
        except NvmlError as exc:
            if exc.code != FUNCTION_NOT_FOUND:
                raise
            info = nvml.struct("nvmlDeviceGetNvLinkRemotePciInfo", "PciInfoLegacy", handle, link)
        try:
            kind = nvml.int("nvmlDeviceGetNvLinkRemoteDeviceType", handle, link)
        except NvmlError:
            kind = None
        links.append((canonical_bus(info.domain, info.bus, info.device), kind))
    return links


def read_topology(host, nvml, gpus, handles, buses):
    """Each GPU's topology: NVLinks to each peer (direct, or both on the NVSwitch fabric) and
    the PCIe path of nvmlDeviceGetTopologyCommonAncestor."""
    by_bus = {bus: i for i, bus in buses.items() if bus is not None}
    nvlinks, switched = {}, {}
    for i, handle in handles.items():
        try:
            links = read_nvlinks(nvml, handle)
        except NvmlError as exc:
            host.unavailable["gpus[%d].topology" % i] = str(exc)
            continue
        for remote, kind in links:
            peer = by_bus.get(remote)
            if kind == NVLINK_DEVICE_SWITCH or (kind is None and peer is None):
                switched[i] = switched.get(i, 0) + 1
            elif peer is not None and peer != i:
                nvlinks[i, peer] = nvlinks.get((i, peer), 0) + 1
    for i, j in ((i, j) for i in handles for j in handles if i < j):
        links = max(nvlinks.get((i, j), 0), nvlinks.get((j, i), 0))
        links += min(switched.get(i, 0), switched.get(j, 0))
        level = nvml.out(nvml.ctypes.c_int)
        try:
            nvml.call("nvmlDeviceGetTopologyCommonAncestor", handles[i], handles[j],
                      nvml.ref(level))  # fmt: skip
            path = TOPOLOGY_PATHS.get(level.value)
        except NvmlError as exc:
            host.unavailable.setdefault("gpus[%d].topology" % i, str(exc))
            path = None
        for a, b in ((i, j), (j, i)):
            if gpus[b]["uuid"] and (links or path):
                gpus[a]["topology"][gpus[b]["uuid"]] = {
                    "nvlink": links,
                    "path": "NV" if links else path,
                }


def read_gpu(host, nvml, index, users):
    """(gpu, handle, (domain, bus, device)) of GPU ``index``."""
    gpu = empty_gpu(index)
    try:
        handle = nvml.handle(("nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"),
                             index)  # fmt: skip
    except NvmlError as exc:
        host.unavailable["gpus[%d]" % index] = "NVML cannot open GPU %d (%s)" % (index, exc)
        return gpu, None, None
    pci = attempt(host, "gpus[%d].pci_bus_id" % index, pci_info, nvml, handle)
    memory = attempt(host, None, nvml.struct, "nvmlDeviceGetMemoryInfo", "Memory", handle)
    util = attempt(host, None, nvml.struct, "nvmlDeviceGetUtilizationRates", "Utilization",
                   handle)  # fmt: skip
    major, minor = nvml.out(nvml.ctypes.c_int), nvml.out(nvml.ctypes.c_int)
    capability = attempt(host, None, nvml.call, "nvmlDeviceGetCudaComputeCapability", handle,
                         nvml.ref(major), nvml.ref(minor))  # fmt: skip
    current, pending = nvml.out(), nvml.out()
    mig = attempt(host, None, nvml.call, "nvmlDeviceGetMigMode", handle, nvml.ref(current),
                  nvml.ref(pending))  # fmt: skip
    temperature = attempt(host, None, nvml.uint, "nvmlDeviceGetTemperature", handle, 0)
    power = attempt(host, None, nvml.uint, "nvmlDeviceGetPowerUsage", handle)  # mW
    limit = attempt(host, None, nvml.uint, "nvmlDeviceGetEnforcedPowerLimit", handle)  # mW
    health = read_health(host, nvml, handle, index)
    gpu.update(
        uuid=clean_uuid(attempt(host, "gpus[%d].uuid" % index, nvml.text, "nvmlDeviceGetUUID",
                                handle)),
        name=clean_text(attempt(host, None, nvml.text, "nvmlDeviceGetName", handle)),
        pci_bus_id=pci[0] if pci else None,
        memory_total_bytes=None if memory is None else int(memory.total),
        memory_used_bytes=None if memory is None else int(memory.used),
        utilization_pct=None if util is None else float(util.gpu),
        memory_utilization_pct=None if util is None else float(util.memory),
        temperature_c=None if temperature is None else float(temperature),
        power_w=None if power is None else power / 1000.0,
        power_limit_w=None if limit is None else limit / 1000.0,
        compute_capability=None if capability is None else "%d.%d" % (major.value, minor.value),
        mig_mode=None if mig is None else ("enabled" if current.value == 1 else "disabled"),
        ecc_uncorrected=health["ecc_uncorrected_volatile"],
        processes=read_processes(host, nvml, handle, users, "gpus[%d].processes" % index),
        health=health,
    )  # fmt: skip
    if gpu["ecc_uncorrected"] is None:  # no volatile counter: the aggregate one, as before
        total = nvml.out(nvml.ctypes.c_ulonglong)
        if attempt(host, None, nvml.call, "nvmlDeviceGetTotalEccErrors", handle, 1, 1,
                   nvml.ref(total)):  # fmt: skip
            gpu["ecc_uncorrected"] = int(total.value)
    if gpu["mig_mode"] == "enabled":
        gpu["mig_devices"] = read_mig_devices(host, nvml, handle, index, users)
    return gpu, handle, pci[1] if pci else None


def driver_info(host, nvml):
    cuda = attempt(host, None, nvml.int, ("nvmlSystemGetCudaDriverVersion_v2",
                                           "nvmlSystemGetCudaDriverVersion"))  # fmt: skip
    version = attempt(host, None, nvml.text, "nvmlSystemGetDriverVersion", None, 80)
    return {
        "driver_version": clean_text(version, 32),
        "cuda_version": "%d.%d" % (cuda // 1000, cuda % 1000 // 10) if cuda else None,
        "source": "nvml",
    }


def read_gpus(host, reasons, path=LIBRARY):
    """(gpus, driver) through NVML, or None with the reason appended to ``reasons``."""
    nvml, why = open_nvml(path)
    if nvml is None:
        reasons.append(why)
        return None
    try:
        count = nvml.uint(("nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"))
        gpus, handles, buses, users = [], {}, {}, {}
        for index in range(count):
            gpu, handle, bus = read_gpu(host, nvml, index, users)
            gpus.append(gpu)
            if handle is not None:
                handles[index], buses[index] = handle, bus
        if len(handles) > 1:
            read_topology(host, nvml, gpus, handles, buses)
        return gpus, driver_info(host, nvml)
    except NvmlError as exc:
        reasons.append("NVML failed (%s)" % exc)
        return None
    finally:
        nvml.shutdown()


# --- the dashboard's samples: NVML opened once per agent process and kept open ---

SAMPLE_STATE = {"nvml": None, "failed": None}


def sample_session():
    """The agent's NVML for samples, or None (the reason in SAMPLE_STATE["failed"])."""
    if SAMPLE_STATE["nvml"] is None and SAMPLE_STATE["failed"] is None:
        SAMPLE_STATE["nvml"], SAMPLE_STATE["failed"] = open_nvml()
    return SAMPLE_STATE["nvml"]


def sample_gpus(nvml):
    """The moving fields of each GPU (sampling.GPU_FIELDS)."""
    gpus = []
    for index in range(nvml.uint(("nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"))):
        try:
            handle = nvml.handle(("nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"),
                                 index)  # fmt: skip
        except NvmlError:
            continue
        memory = attempt(None, None, nvml.struct, "nvmlDeviceGetMemoryInfo", "Memory", handle)
        util = attempt(None, None, nvml.struct, "nvmlDeviceGetUtilizationRates", "Utilization",
                       handle)  # fmt: skip
        temperature = attempt(None, None, nvml.uint, "nvmlDeviceGetTemperature", handle, 0)
        power = attempt(None, None, nvml.uint, "nvmlDeviceGetPowerUsage", handle)
        gpus.append({
            "index": index,
            "uuid": clean_uuid(attempt(None, None, nvml.text, "nvmlDeviceGetUUID", handle)),
            "utilization_pct": None if util is None else float(util.gpu),
            "memory_utilization_pct": None if util is None else float(util.memory),
            "memory_used_bytes": None if memory is None else int(memory.used),
            "memory_total_bytes": None if memory is None else int(memory.total),
            "temperature_c": None if temperature is None else float(temperature),
            "power_w": None if power is None else power / 1000.0,
        })  # fmt: skip
    return gpus
