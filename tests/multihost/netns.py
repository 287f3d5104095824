"""A test bed of hosts made of network namespaces on one bridge.

Each host is a namespace ``imcl-<pid>-<name>`` with a veth pair to the
bridge ``imcl-br0`` and one address in 10.231.7.0/24; the root namespace
gets .1 on the bridge, so the test's clients reach every host. Nothing is
addressed outside that range (or 127.0.0.1). Everything the bed makes, it
removes on exit, also on failure or Ctrl-C; leftovers of an earlier run
that died (its pid is gone) are removed when a bed starts.

Faults are the ones a real network and a real machine have: a host's
link down (its veth: packets vanish, no reset reaches anyone), a process
frozen (SIGSTOP) or killed (SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imctl.cluster import pid_alive

PREFIX = "imcl-"
BRIDGE = "imcl-br0"
SUBNET = "10.231.7"
ROOT_ADDRESS = f"{SUBNET}.1"
PR_SET_PDEATHSIG = 1
_OURS = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")
_OUR_VETH = re.compile(r"^imcl(\d+)v\d+(@|$)")


def unavailable() -> str | None:
    """Why a bed cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"ip netns is unavailable: {probe.stderr.strip()}"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _namespaces() -> list[str]:
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_leftovers() -> None:
    """Namespaces of runs whose process is gone, and the bridge if no live run holds it.

    A live run's namespaces are refused: two beds cannot share the range.
    """
    live = []
    for name in _namespaces():
        match = _OURS.match(name)
        if match is None:
            continue
        if pid_alive(int(match.group(1))) and int(match.group(1)) != os.getpid():
            live.append(name)
            continue
        _kill_namespace_processes(name)
        _ip("netns", "delete", name, check=False)
    if live:
        raise RuntimeError(f"another test bed is running: {', '.join(live)}")
    # A veth whose namespace went first (one held by a dying process) stays in ours.
    for line in _ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip()
        match = _OUR_VETH.match(name)
        if match is not None and (int(match.group(1)) % 100000) != os.getpid() % 100000:
            _ip("link", "delete", name.partition("@")[0], check=False)
    _ip("link", "delete", BRIDGE, check=False)


def _kill_namespace_processes(namespace: str) -> None:
    pids = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _die_with_parent() -> None:
    # A process of the bed dies with the test run, even one killed by SIGKILL.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    """One process started inside a host, with its own log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_file: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(10)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a frozen process is thawed first), SIGKILL after ``timeout``."""
        if not self.running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:]


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    veth: str  # the root namespace's end, on the bridge
    processes: list[Process] = field(default_factory=list)


class Bed:
    """The bridge, one namespace per host, and what runs in them; a context manager."""

    def __init__(self, names: Sequence[str], run_dir: Path) -> None:
        if len(names) > 200:
            raise ValueError("at most 200 hosts")
        self.run_dir = run_dir
        pid = os.getpid()
        self.hosts = {
            name: Host(
                name,
                f"{PREFIX}{pid}-{name}",
                f"{SUBNET}.{i + 2}",
                f"imcl{pid % 100000}v{i}",  # interface names have 15 characters at most
            )
            for i, name in enumerate(names)
        }

    def __enter__(self) -> Bed:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        remove_leftovers()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{ROOT_ADDRESS}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for host in self.hosts.values():
            _ip("netns", "add", host.namespace)
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
            _ip("link", "set", host.veth, "master", BRIDGE)
            _ip("link", "set", host.veth, "up")
            self.ip_in(host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
            self.ip_in(host.name, "link", "set", "eth0", "up")
            self.ip_in(host.name, "link", "set", "lo", "up")

    def down(self) -> None:
        """Stop every process (bounded), delete every namespace, link and the bridge.

        Hosts in the reverse order of their names (the servers before the
        databases they need, as a real shutdown goes), processes newest first.
        """
        for host in reversed(self.hosts.values()):
            for process in reversed(host.processes):
                with contextlib.suppress(Exception):
                    process.stop(timeout=5)
        for host in self.hosts.values():
            _kill_namespace_processes(host.namespace)
            _ip("netns", "delete", host.namespace, check=False)
            _ip("link", "delete", host.veth, check=False)
        _ip("link", "delete", BRIDGE, check=False)

    def ip_in(self, host: str, *args: str) -> None:
        _ip("-n", self.hosts[host].namespace, *args)

    def address(self, host: str) -> str:
        return self.hosts[host].address

    def run(self, host: str, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Process:
        """Start ``argv`` in ``host``; its output goes to ``run_dir/<name>.log``."""
        target = self.hosts[host]
        log_file = self.run_dir / f"{name}.log"
        with log_file.open("ab") as log:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", target.namespace, *argv],  # ip execs argv: the same pid
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                env={**os.environ, **(env or {})},
            )
        process = Process(name, popen, log_file)
        target.processes.append(process)
        return process

    def exec(self, host: str, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host`` to completion."""
        return subprocess.run(
            ["ip", "netns", "exec", self.hosts[host].namespace, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def cut(self, host: str) -> None:
        """Take the host's link down: its packets vanish, its peers see silence."""
        _ip("link", "set", self.hosts[host].veth, "down")

    def restore(self, host: str) -> None:
        _ip("link", "set", self.hosts[host].veth, "up")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``predicate`` until true; the seconds it took. Raises TimeoutError after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout}s")
