"""Two real hosts on one machine: Linux network namespaces joined by a veth pair, each process with its own
hostname and /etc/hosts (``unshare --uts --mount``), sharing the filesystem as a cluster's nodes share a run
directory. Only root can build them. Traffic stays on the veth pair (198.18.0.0/24, a range reserved for
benchmarking networks): nothing else is routed from inside, and nothing outside can reach in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUBNET = "198.18.0"
HOSTNAMES = ("h1", "h2")


@dataclass
class Hosts:
    """``namespaces[i]`` is host ``hostnames[i]`` at ``addresses[i]``; its end of the veth pair is ``links[i]``."""

    namespaces: list[str]
    links: list[str]
    folder: Path
    hostnames: tuple[str, ...] = HOSTNAMES
    addresses: tuple[str, ...] = tuple(f"{SUBNET}.{i + 1}" for i in range(len(HOSTNAMES)))
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def hosts_file(self, lines: dict[str, str] | None = None, name: str = "hosts") -> Path:
        """An /etc/hosts for the hosts: every name at its own address unless ``lines`` maps it elsewhere."""
        mapping = {host: address for host, address in zip(self.hostnames, self.addresses, strict=True)}
        mapping.update(lines or {})
        path = self.folder / name
        path.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for h, a in mapping.items()))
        return path

    def start(
        self, host: int, args: list[str], log: Path, hosts_file: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``torchport ARGS`` on host ``host``, in its own session; the pid is torchport's (every step execs).
        ``env`` is added to this process's environment."""
        setup = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'
        command = ["ip", "netns", "exec", self.namespaces[host], "unshare", "--uts", "--mount", "sh", "-c", setup]
        command += ["sh", self.hostnames[host], str(hosts_file or self.hosts_file())]
        command += [sys.executable, "-m", "torchport.cli", *args]
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.started.append(proc)
        return proc

    def power_off(self, host: int) -> None:
        """The whole node goes away: SIGKILL to every process on host ``host`` (its agent and the workers, which
        torchrun starts in sessions of their own). The namespace and its wire stay, as a dead machine's port does."""
        _kill_inside(self.namespaces[host])

    def link(self, host: int, up: bool) -> None:
        """Cut (or restore) host ``host``'s end of the wire."""
        ip("-n", self.namespaces[host], "link", "set", self.links[host], "up" if up else "down")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "namespaced hosts need root (ip netns, unshare --mount)"
    missing = [tool for tool in ("ip", "unshare", "mount", "hostname") if shutil.which(tool) is None]
    return f"namespaced hosts need {', '.join(missing)}" if missing else None


def _skip_or_fail(reason: str) -> None:
    # CI runs as root with iproute2: there a missing prerequisite is a broken runner, not a reason to skip.
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _kill_inside(namespace: str) -> None:
    """Whatever still runs in our namespace is ours (the namespace was made for this session)."""
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def two_hosts(folder: Path) -> Iterator[Hosts]:
    """Build the hosts; always tear them down. Names are unique per session, so a crashed run cannot collide."""
    reason = _unavailable()
    if reason:
        _skip_or_fail(reason)
    tag = f"tp{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
    namespaces, links = [f"{tag}n{i}" for i in (1, 2)], [f"{tag}v{i}" for i in (1, 2)]
    hosts = Hosts(namespaces, links, folder)
    try:
        try:
            for namespace in namespaces:
                ip("netns", "add", namespace)
            ip("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        except subprocess.CalledProcessError as exc:
            _skip_or_fail(f"cannot create network namespaces here: {exc.stderr.decode().strip()}")
        for namespace, link, address in zip(namespaces, links, hosts.addresses, strict=True):
            ip("link", "set", link, "netns", namespace)
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", link)
            ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", namespace, "link", "set", link, "up")
        yield hosts
    finally:
        for proc in hosts.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for namespace in namespaces:
            _kill_inside(namespace)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        # A veth whose namespace creation failed halfway is still in ours.
        subprocess.run(["ip", "link", "del", links[0]], capture_output=True, check=False)
