"""A throwaway cluster of real sshd "hosts" built from Linux namespaces, for integration tests.

Layout (prefix ``lep``, N hosts, everything owned by root)::

    root namespace                         netns lep-h1 (+ private UTS and mount namespaces)
    --------------                         -------------------------------------------------
    bridge lepbr0  10.213.0.1/24  <--+---- eth0 10.213.0.11/24, lo      hostname h1
      (no prefix route; one /32      |       /root -> BASE/h1/home   /tmp -> BASE/h1/tmp
       route per lab host)           |       sshd -D -f BASE/h1/sshd_config  (listens on :22)
    veth lepv1 (bridge port) --------+     netns lep-h2 ... 10.213.0.12, and so on

    BASE (default: mkdtemp under /var/tmp, never /tmp since /tmp is bind-mounted in hosts)
      operator/.ssh/{id_ed25519,id_ed25519.pub,known_hosts,config}   HOME of the test process
      hN/{home,tmp,sshd_config,ssh_host_ed25519_key{,.pub},sshd.pid,sshd.log}

With ``profile=ClusterProfile(...)`` the lab looks like a real cluster instead: a non-root
login user (uid 2901, bash or tcsh, rc files that print) whose ``/home`` is ONE directory
shared by every host (the way an NFS home is), a node-local ``/scratch`` per host, hosts
whose sshd takes keys only from a root-owned central file, hosts without ``python3`` on the
PATH, and pairs of hosts that cannot connect to each other (:meth:`Lab.block`).  The user
exists only inside the hosts (their ``/etc/passwd`` and ``/etc/group`` are bind-mounted
copies with one more line); root still logs in with its private ``/root`` for inspection.

Each host has an *anchor* process (``sleep infinity``) that owns its UTS and mount namespaces;
sshd and :meth:`Lab.run_in` enter the anchor's namespaces with ``nsenter``, so a host keeps its
/root and /tmp while its sshd is stopped.  Bandwidth shaping is an htb qdisc on the source
host's eth0 with one class + u32 filter per shaped destination (the default class is
unlimited).  ``down()`` kills everything in the netns, deletes them, the bridge and BASE.

Labs past ~230 hosts take a wider network: ``Lab(n, subnet=WIDE_SUBNET)`` (10.214.0.0/16).

Manual use:  ``python -m tests.lab up 3`` / ``python -m tests.lab down``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path, PurePosixPath

SUBNET = "10.213.0"  # the default network, 10.213.0.0/24
WIDE_SUBNET = "10.214.0.0/16"  # for labs past ~230 hosts (Lab(..., subnet=WIDE_SUBNET))
SSHD = "/usr/sbin/sshd"
TOOLS = ("ip", "unshare", "nsenter", "tc", "ssh", "ssh-keygen")
STATE_DIR = Path("/var/tmp")

SSHD_CONFIG = """\
ListenAddress {ip}
Port 22
HostKey {root}/ssh_host_ed25519_key
PidFile {root}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
StrictModes no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
AcceptEnv LANG LC_*
PrintMotd no
UseDNS no
LogLevel VERBOSE
"""


USER_UID = 2901
SCRATCH = "/scratch"  # mount point of each host's node-local scratch directory

# What a site's rc files print: a banner on stdout without a final newline, and a `module`
# system's chatter on stderr.  sshd runs every command (forced ones too) through this shell.
CHATTY_BASHRC = (
    'echo "Welcome to the lab cluster ($(hostname))"; printf "motd: be nice"\n'
    'echo "module: loaded gcc/12 cuda/12.4" >&2\n'
)
CHATTY_CSHRC = (
    'echo "Welcome to the lab cluster (tcsh on `hostname`)"\n'
    'printf "motd: be nice"\n'
    "/bin/sh -c 'echo \"module: loaded gcc/12 cuda/12.4\" >&2'\n"
)


@dataclass(frozen=True)
class ClusterProfile:
    """Hosts as most GPU clusters have them (see the module docstring)."""

    user: str = "lepu"
    shell: str = "/bin/bash"  # "/usr/bin/tcsh" for a tcsh login shell
    chatty: bool = True  # rc files print to stdout (no final newline) and stderr
    central_keys: frozenset[str] = field(default_factory=frozenset)  # sshd: central file only
    no_python: frozenset[str] = field(default_factory=frozenset)  # no python* on the PATH

    @property
    def home(self) -> str:
        return f"/home/{self.user}"


def _run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    proc = subprocess.run(argv, check=False, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _keygen(path: Path, comment: str) -> str:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    _run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", comment, "-f", str(path)])
    path.chmod(0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


@dataclass
class LabHost:
    name: str  # "h1".."hN"
    ip: str  # 10.213.0.(10+i)
    netns: str  # f"{prefix}-h{i}"
    root: Path  # BASE/hN on the real filesystem
    host_key_pub: str = ""
    sshd_pid: int | None = None
    anchor_pid: int | None = None  # owns the UTS + mount namespaces
    veth: str = ""  # root-namespace end of the veth pair (bridge port)


class Lab:
    def __init__(
        self,
        n: int,
        *,
        prefix: str = "lep",
        base: Path | None = None,
        first_ip: int = 10,
        profile: ClusterProfile | None = None,
        subnet: str = f"{SUBNET}.0/24",
    ) -> None:
        if not (prefix.isalnum() and len(prefix) <= 8):
            raise ValueError("prefix must be alphanumeric, at most 8 characters")
        # Host i is the network's address number first_ip + i (10.213.0.(first_ip + i) by
        # default; past .255 in a wider one); the bridge is its address number 1.
        self.network = IPv4Network(subnet)
        if not 1 <= n <= self.network.num_addresses - 16 - first_ip or first_ip < 1:
            raise ValueError("bad host count")
        self.n, self.prefix, self.profile = n, prefix, profile
        self.gateway = str(self.network[1])
        self.bridge = f"{prefix}br0"
        self.base = Path(base) if base is not None else Path(tempfile.mkdtemp(dir="/var/tmp"))
        self.operator_home = self.base / "operator"
        self.hosts = [
            LabHost(
                name=f"h{i}",
                ip=str(self.network[first_ip + i]),
                netns=f"{prefix}-h{i}",
                root=self.base / f"h{i}",
                veth=f"{prefix}v{i}",
            )
            for i in range(1, n + 1)
        ]
        self._procs: dict[int, subprocess.Popen] = {}
        self._shapes: dict[str, dict[str, float]] = {}
        self._blocked: set[frozenset[str]] = set()
        self.operator_pub = ""
        if profile is not None:
            unknown = (profile.central_keys | profile.no_python) - {h.name for h in self.hosts}
            if unknown:
                raise ValueError(f"profile names hosts this lab lacks: {sorted(unknown)}")

    # ------------------------------------------------------------------ who logs in where
    @property
    def user(self) -> str:
        """The login user of inventories for this lab."""
        return self.profile.user if self.profile else "root"

    @property
    def home(self) -> str:
        """The login user's home directory, as the hosts see it."""
        return self.profile.home if self.profile else "/root"

    @property
    def data_dir(self) -> str:
        """The agent's data directory that test inventories use: node-local on a cluster."""
        if self.profile:
            return f"{SCRATCH}/lepton-data"
        return "/root/.local/share/leptonctl"

    def inventory_vars(self, name: str) -> dict[str, str]:
        """Per-host inventory variables a working inventory of this lab needs."""
        if self.profile is None:
            return {}
        found = {"lepton_data_dir": self.data_dir}
        if name in self.profile.no_python:
            found["ansible_python_interpreter"] = "/usr/bin/python3.11"
        return found

    # ------------------------------------------------------------------ availability
    @staticmethod
    def unavailable_reason() -> str | None:
        if sys.platform != "linux":
            return "needs Linux"
        if os.geteuid() != 0:
            return "needs root"
        if not os.access(SSHD, os.X_OK):
            return "sshd not installed (apt-get install openssh-server)"
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            return f"{'/'.join(missing)} missing (apt-get install iproute2 util-linux ssh)"
        probe = f"lepprobe{os.getpid()}"
        try:
            r = _run(["ip", "netns", "add", probe], check=False, timeout=10)
        finally:
            _run(["ip", "netns", "del", probe], check=False, timeout=10)
        if r.returncode != 0:
            return f"cannot create network namespaces: {r.stderr.strip()}"
        return None

    # ------------------------------------------------------------------ lifecycle
    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Lab:
        if self.base.is_dir() and any(self.base.iterdir()):  # down() would delete it
            raise RuntimeError(f"lab base {self.base} is not empty")
        try:
            self._purge_network()
            for h in self.hosts:
                if _run(["ip", "route", "show", f"{h.ip}/32"], check=False).stdout.strip():
                    raise RuntimeError(f"{h.ip} is routed already (another lab? use first_ip=)")
            self._make_files()
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            # Bridged lab traffic must not go through the root namespace's iptables.
            _run(["ip", "link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "0"],
                 check=False)  # fmt: skip
            bridge_address = f"{self.gateway}/{self.network.prefixlen}"
            _run(["ip", "addr", "add", bridge_address, "dev", self.bridge, "noprefixroute"])
            _run(["ip", "link", "set", self.bridge, "up"])
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
            for h in self.hosts:
                self._make_netns(h)
                self._start_anchor(h)
                self.start_sshd(h.name)
            self.refresh_known_hosts()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for h in self.hosts:
            h.sshd_pid = h.anchor_pid = None
        for proc in self._procs.values():
            _kill(proc.pid)
        self._purge_network()
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        self._shapes.clear()
        shutil.rmtree(self.base, ignore_errors=True)

    def _purge_network(self) -> None:
        """Remove every netns / link of this prefix (also leftovers of a crashed run)."""
        listing = _run(["ip", "netns", "list"], check=False).stdout
        for line in listing.splitlines():
            ns = line.split()[0] if line.split() else ""
            if ns.startswith(f"{self.prefix}-h") and ns[len(self.prefix) + 2 :].isdigit():
                pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
                for pid in pids:
                    _kill(int(pid))
                _run(["ip", "netns", "del", ns], check=False)
        links = _run(["ip", "-o", "link", "show"], check=False).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            is_veth = name.startswith(f"{self.prefix}v") and name[len(self.prefix) + 1 :].isdigit()
            if name == self.bridge or is_veth:
                _run(["ip", "link", "del", name], check=False)

    def _make_files(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        ssh_dir = self.operator_home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        for sub in (".config", ".cache", ".local/share", ".local/state", ".run"):
            (self.operator_home / sub).mkdir(parents=True, mode=0o700, exist_ok=True)
        self.operator_pub = _keygen(ssh_dir / "id_ed25519", "lab-operator")
        (ssh_dir / "config").write_text("")
        if self.profile is not None:
            self._make_cluster_files(self.profile)
        for h in self.hosts:
            (h.root / "home" / ".ssh").mkdir(parents=True)  # parents: the root profile's hN
            (h.root / "home").chmod(0o700)
            (h.root / "home" / ".ssh").chmod(0o700)
            (h.root / "tmp").mkdir()
            (h.root / "tmp").chmod(0o1777)
            config = SSHD_CONFIG.format(ip=h.ip, root=h.root)
            if self.profile is not None:
                config += self._cluster_sshd_config(self.profile, h)
            if self.profile is not None and h.name in self.profile.central_keys:
                config = config.replace("AuthorizedKeysFile .ssh/authorized_keys\n", "")
            (h.root / "sshd_config").write_text(config)
            h.host_key_pub = _keygen(h.root / "ssh_host_ed25519_key", f"root@{h.name}")
            self.authorize(h.name, self.operator_pub)
            if self.profile is not None:
                self.authorize(h.name, self.operator_pub, user=self.profile.user)

    def _make_cluster_files(self, profile: ClusterProfile) -> None:
        """The shared /home, the hosts' passwd/group with the user, node-local /scratch,
        central key files, and a PATH without python for the no-python hosts."""
        uid = gid = USER_UID
        # sshd reads a user's keys as that user, and the no-python PATH is under BASE/hN:
        # the user may pass through (never list) the lab's directories.
        self.base.chmod(0o711)
        etc = self.base / "etc"
        etc.mkdir()
        passwd = Path("/etc/passwd").read_text()
        line = f"{profile.user}:x:{uid}:{gid}:lab user:{profile.home}:{profile.shell}\n"
        (etc / "passwd").write_text(passwd + ("" if passwd.endswith("\n") else "\n") + line)
        group = Path("/etc/group").read_text()
        (etc / "group").write_text(group + f"{profile.user}:x:{gid}:\n")
        for name in ("passwd", "group"):
            (etc / name).chmod(0o644)
        shared = self.base / "shared-home"
        home = shared / profile.user
        (home / ".ssh").mkdir(parents=True)
        if profile.chatty:
            (home / ".bashrc").write_text(CHATTY_BASHRC)
            (home / ".profile").write_text(CHATTY_BASHRC)
            (home / ".cshrc").write_text(CHATTY_CSHRC)
            (home / ".login").write_text("echo 'tcsh .login speaking'\n")
        for path in (home, *home.rglob("*")):
            os.chown(path, uid, gid)
        home.chmod(0o700)
        (home / ".ssh").chmod(0o700)
        Path(SCRATCH).mkdir(exist_ok=True)  # the mount point; each host binds its own over it
        for h in self.hosts:
            h.root.mkdir()
            h.root.chmod(0o711)
            (h.root / "scratch").mkdir()
            (h.root / "scratch").chmod(0o1777)
            if h.name in profile.central_keys:
                (h.root / "central").mkdir()
            if h.name in profile.no_python:
                self._make_bin_without_python(h.root / "bin")

    @staticmethod
    def _make_bin_without_python(target: Path) -> None:
        target.mkdir()
        for entry in sorted(Path("/usr/bin").iterdir()):
            if not entry.name.startswith("python"):
                (target / entry.name).symlink_to(entry)

    def _cluster_sshd_config(self, profile: ClusterProfile, h: LabHost) -> str:
        extra = ""
        if h.name in profile.central_keys:
            # Keys come only from a root-owned file per user (as from LDAP or a config
            # management system); ~/.ssh/authorized_keys is not read.
            extra += f"AuthorizedKeysFile {h.root}/central/%u\n"
        if h.name in profile.no_python:
            extra += f"SetEnv PATH={h.root}/bin\n"
        return extra

    def _make_netns(self, h: LabHost) -> None:
        peer = f"{self.prefix}p{h.name[1:]}"
        ns = ["ip", "-n", h.netns]
        _run(["ip", "netns", "add", h.netns])
        _run(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", peer])
        _run(["ip", "link", "set", peer, "netns", h.netns])
        _run([*ns, "link", "set", peer, "name", "eth0"])
        _run([*ns, "addr", "add", f"{h.ip}/{self.network.prefixlen}", "dev", "eth0"])
        _run([*ns, "link", "set", "eth0", "up"])
        _run([*ns, "link", "set", "lo", "up"])
        _run(["ip", "link", "set", h.veth, "master", self.bridge])
        _run(["ip", "link", "set", h.veth, "up"])
        _run(["ip", "route", "replace", f"{h.ip}/32", "dev", self.bridge, "src", self.gateway])

    def _start_anchor(self, h: LabHost) -> None:
        mounts = f"mount --bind {h.root}/home /root && mount --bind {h.root}/tmp /tmp && "
        if self.profile is not None:
            etc = self.base / "etc"
            mounts += (
                f"mount --bind {self.base}/shared-home /home && "
                f"mount --bind {h.root}/scratch {SCRATCH} && "
                f"mount --bind {etc}/passwd /etc/passwd && mount --bind {etc}/group /etc/group && "
            )
        script = f"hostname {h.name} && {mounts}echo ready && exec sleep infinity"
        argv = ["ip", "netns", "exec", h.netns, "unshare", "--uts", "--mount"]
        argv += ["--propagation", "private", "sh", "-c", script]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self._procs[proc.pid] = proc
        line = proc.stdout.readline() if proc.stdout else ""  # sh prints "ready" or exits
        if line.strip() != "ready":
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"{h.name}: namespace setup failed: {err.strip()}")
        h.anchor_pid = proc.pid

    # ------------------------------------------------------------------ sshd control
    def start_sshd(self, name: str, timeout: float = 10.0) -> None:
        h = self.host(name)
        if h.sshd_pid is not None:
            raise RuntimeError(f"{name}: sshd already running")
        log = h.root / "sshd.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                [*self._enter(h), SSHD, "-D", "-e", "-f", str(h.root / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=fh,
                start_new_session=True,
            )
        self._procs[proc.pid] = proc
        h.sshd_pid = proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with socket.create_connection((h.ip, 22), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop_sshd(name)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{name}: sshd did not come up on {h.ip}:22; log tail:\n{tail}")

    def stop_sshd(self, name: str) -> None:
        h = self.host(name)
        if h.sshd_pid is None:
            return
        proc = self._procs.pop(h.sshd_pid)
        h.sshd_pid = None
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def crash_host(self, name: str) -> None:
        """The machine "goes away": its sshd listener, every SSH session and every process
        started through them die at once (the anchor holding its namespaces stays)."""
        h = self.host(name)
        self.stop_sshd(name)
        pids = _run(["ip", "netns", "pids", h.netns], check=False).stdout.split()
        for pid in map(int, pids):
            if pid != h.anchor_pid:
                _kill(pid)

    def pids_matching(self, name: str, needle: bytes) -> list[int]:
        """PIDs of the processes inside one host's network namespace whose command line
        (NUL-separated, as in /proc/PID/cmdline) contains ``needle``."""
        found = []
        for pid in map(int, _run(["ip", "netns", "pids", self.host(name).netns]).stdout.split()):
            try:
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
        return found

    def regenerate_host_key(self, name: str) -> str:
        """New host key + sshd restart.  The operator's known_hosts keeps the old key."""
        h = self.host(name)
        self.stop_sshd(name)
        h.host_key_pub = _keygen(h.root / "ssh_host_ed25519_key", f"root@{h.name}")
        self.start_sshd(name)
        return h.host_key_pub

    def refresh_known_hosts(self) -> None:
        """(Re)write the operator's known_hosts with every host's *current* key, by plain IP."""
        lines = [f"{h.ip} {' '.join(h.host_key_pub.split()[:2])}\n" for h in self.hosts]
        self.known_hosts.write_text("".join(lines))

    # ------------------------------------------------------------------ authorized_keys
    def _authorized_keys(self, name: str, user: str = "root") -> Path:
        """Where sshd on host ``name`` reads ``user``'s keys (a central file on the profile's
        central-key hosts; the shared home's file for the profile's user elsewhere)."""
        h = self.host(name)
        if self.profile is not None and name in self.profile.central_keys:
            return h.root / "central" / user
        if user == "root":
            return h.root / "home" / ".ssh" / "authorized_keys"
        if self.profile is None or user != self.profile.user:
            raise ValueError(f"no such lab user: {user}")
        return self.base / "shared-home" / user / ".ssh" / "authorized_keys"

    def authorize(self, name: str, pubkey: str, user: str = "root") -> None:
        path = self._authorized_keys(name, user)
        old = path.read_text() if path.exists() else ""
        if pubkey.strip() + "\n" in old:  # a shared home's file serves every host already
            return
        path.write_text(old + pubkey.strip() + "\n")
        central = self.profile is not None and name in self.profile.central_keys
        path.chmod(0o644 if central else 0o600)
        if user != "root" and not central:
            os.chown(path, USER_UID, USER_UID)

    def deauthorize_operator(self, name: str) -> None:
        path = self._authorized_keys(name)
        blob = self.operator_pub.split()[1]
        keep = [ln for ln in path.read_text().splitlines(keepends=True) if blob not in ln]
        path.write_text("".join(keep))

    # ------------------------------------------------------------------ operator side
    @property
    def known_hosts(self) -> Path:
        return self.operator_home / ".ssh" / "known_hosts"

    @property
    def operator_key(self) -> Path:
        return self.operator_home / ".ssh" / "id_ed25519"

    def operator_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("SSH_AUTH_SOCK", "SSH_AGENT_PID"):
            env.pop(var, None)
        home = self.operator_home
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_DATA_HOME=str(home / ".local/share"),
            XDG_STATE_HOME=str(home / ".local/state"),
            XDG_RUNTIME_DIR=str(home / ".run"),
        )
        return env

    def ssh_argv(self, name: str, *command: str, user: str = "root") -> list[str]:
        """A strict ``ssh USER@host command`` using only the operator's lab files."""
        return [
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=5", "-i", str(self.operator_key),
            f"{user}@{self.host(name).ip}", *command,
        ]  # fmt: skip

    # ------------------------------------------------------------------ inside hosts
    def _enter(self, h: LabHost) -> list[str]:
        if h.anchor_pid is None:
            raise RuntimeError(f"{h.name} is not up")
        return ["nsenter", "-t", str(h.anchor_pid), "-n", "-m", "-u", "--"]

    def run_in(self, name: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run argv in the host's net + mount + UTS namespaces (sees its /root and /tmp)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("check", False)
        return subprocess.run([*self._enter(self.host(name)), *argv], **kw)

    def popen_in(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        """Like run_in, but in the background; the caller waits for / kills the process."""
        return subprocess.Popen([*self._enter(self.host(name)), *argv], **kw)

    def path_on(self, name: str, path: str) -> Path:
        """The real path of ``path`` as host ``name`` sees it (/root, /tmp, and on a cluster
        profile /home, shared by all hosts, and the host's own /scratch)."""
        p = PurePosixPath(path)
        h = self.host(name)
        maps = [("/root", h.root / "home"), ("/tmp", h.root / "tmp")]
        if self.profile is not None:
            maps += [("/home", self.base / "shared-home"), (SCRATCH, h.root / "scratch")]
        for inside, outside in maps:
            if p == PurePosixPath(inside) or PurePosixPath(inside) in p.parents:
                return outside / p.relative_to(inside)
        raise ValueError(f"{path} does not map to a real path in this lab")

    def give(self, path: Path) -> Path:
        """Hand a real path made by the test (root) to the lab's login user, recursively."""
        if self.profile is not None:
            for each in (path, *(path.rglob("*") if path.is_dir() else ())):
                os.lchown(each, USER_UID, USER_UID)
        return path

    @property
    def writable_dir(self) -> str:
        """A directory, as hosts see it, where the login user may create things."""
        return self.home if self.profile is None else SCRATCH

    # ------------------------------------------------------------------ firewalls
    def block(self, a: str, b: str) -> None:
        """Hosts a and b can no longer connect to each other (either way): each gets an
        ``unreachable`` route to the other, so a connect fails at once (EHOSTUNREACH)."""
        if a == b:
            raise ValueError("a host cannot be blocked from itself")
        for src, dst in ((a, b), (b, a)):
            _run(["ip", "-n", self.host(src).netns, "route", "replace", "unreachable",
                  f"{self.host(dst).ip}/32"])  # fmt: skip
        self._blocked.add(frozenset((a, b)))

    def unblock(self, a: str, b: str) -> None:
        for src, dst in ((a, b), (b, a)):
            _run(["ip", "-n", self.host(src).netns, "route", "del", "unreachable",
                  f"{self.host(dst).ip}/32"], check=False)  # fmt: skip
        self._blocked.discard(frozenset((a, b)))

    def unblock_all(self) -> None:
        for pair in list(self._blocked):
            self.unblock(*sorted(pair))

    # ------------------------------------------------------------------ shaping
    def shape(self, src: str, dst: str, rate_mbit: float) -> None:
        """Limit traffic from host src to host dst's IP to rate_mbit (other traffic unlimited)."""
        self.host(dst)
        self._shapes.setdefault(src, {})[dst] = rate_mbit
        self._apply_shaping(src)

    def clear_shaping(self, name: str | None = None) -> None:
        for h in self.hosts if name is None else [self.host(name)]:
            self._shapes.pop(h.name, None)
            self._apply_shaping(h.name)

    def _apply_shaping(self, src: str) -> None:
        h = self.host(src)
        tc = ["tc", "-n", h.netns]
        _run([*tc, "qdisc", "del", "dev", "eth0", "root"], check=False)
        shapes = self._shapes.get(src)
        if not shapes:
            return
        _run([*tc, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"])
        _run([*tc, "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1",
              "htb", "rate", "100gbit"])  # fmt: skip
        for dst, rate in sorted(shapes.items()):
            classid = f"1:{10 + self.hosts.index(self.host(dst))}"
            kbit = f"{max(int(rate * 1000), 8)}kbit"
            _run([*tc, "class", "add", "dev", "eth0", "parent", "1:", "classid", classid,
                  "htb", "rate", kbit, "ceil", kbit])  # fmt: skip
            _run([*tc, "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip",
                  "prio", "1", "u32", "match", "ip", "dst", f"{self.host(dst).ip}/32",
                  "flowid", classid])  # fmt: skip


# ---------------------------------------------------------------------- manual exploration
def _state_file(prefix: str) -> Path:
    return STATE_DIR / f"leptonctl-lab-{prefix}.json"


def main(argv: list[str]) -> int:
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "down" and len(args) <= 1:
        prefix = args[0] if args else "lep"
        state = _state_file(prefix)
        info = json.loads(state.read_text()) if state.exists() else {}
        n, base = info.get("n", 1), info.get("base")
        Lab(n, prefix=prefix, base=Path(base) if base else None).down()
        state.unlink(missing_ok=True)
        print(f"lab {prefix} is down")
        return 0
    if cmd != "up" or not 1 <= len(args) <= 2 or not args[0].isdigit():
        print("usage: python -m tests.lab up N [PREFIX] | python -m tests.lab down [PREFIX]")
        return 2
    reason = Lab.unavailable_reason()
    if reason:
        print(f"lab unavailable: {reason}")
        return 1
    n, prefix = int(args[0]), (args[1] if len(args) > 1 else "lep")
    lab = Lab(n, prefix=prefix).up()
    _state_file(prefix).write_text(json.dumps({"n": n, "base": str(lab.base)}))
    print(f"lab {prefix} is up, base {lab.base}")
    for h in lab.hosts:
        print(f"  {h.name}: {' '.join(lab.ssh_argv(h.name))}")
        print(f"      shell inside: nsenter -t {h.anchor_pid} -n -m -u bash")
    print(f"operator HOME={lab.operator_home}; tear down: python -m tests.lab down {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
