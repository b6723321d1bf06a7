"""Launch lines, not a launcher: the torchrun command for `torchport train --nproc-per-node` (the cluster
manifests that run that same command on many machines are in manifests.py).

torchrun does the process management, rendezvous and elastic restarts; every worker it starts runs
``python -m torchport.cli train CONFIG ...``, which finds its rank in the environment (see distributed.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torchport.errors import UsageError

DEFAULT_PORT = 29500
WORKER_MODULE = "torchport.cli"
AGENT_MODULE = "torchport.train.agent"  # torchrun in this process, its failures as one line (see agent.py)
ENDPOINT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class TorchrunOptions:
    """What `torchport train` passes through to torchrun; checked here so a mistake is one line, exit 2."""

    nproc_per_node: int
    nnodes: str = "1"
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str = "torchport"
    max_restarts: int = 0
    local_addr: str | None = None
    dist_timeout_s: float | None = None  # train.dist_timeout_s: bounds the agents' store reads too (see below)

    def check(self) -> None:
        if self.nproc_per_node < 1:
            raise UsageError(f"--nproc-per-node: expected at least 1 process per node (got {self.nproc_per_node})")
        _, high = parse_nnodes(self.nnodes)
        if high > 1 and not self.rdzv_endpoint:
            raise UsageError(
                f"--nnodes {self.nnodes}: several nodes meet at a rendezvous; add --rdzv-endpoint HOST:PORT"
                " (the same on every node)"
            )
        if self.rdzv_endpoint:
            parse_endpoint(self.rdzv_endpoint)
        if self.node_rank is not None and ":" in str(self.nnodes):
            raise UsageError("--node-rank: fixed node ranks and an elastic MIN:MAX --nnodes do not mix; drop one")
        if self.node_rank is not None and not 0 <= self.node_rank < high:
            raise UsageError(f"--node-rank: expected 0 to {high - 1} for --nnodes {self.nnodes} (got {self.node_rank})")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts: expected 0 or more (got {self.max_restarts})")
        if self.local_addr is not None and not self.rdzv_endpoint:
            raise UsageError("--local-addr: this node's address for other nodes; it needs --rdzv-endpoint")


def parse_nnodes(text: str) -> tuple[int, int]:
    """``N`` or ``MIN:MAX`` (an elastic job that runs with anywhere from MIN to MAX nodes)."""
    parts = str(text).split(":")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        low = high = 0
    if low < 1 or high < low:
        raise UsageError(f"--nnodes: expected a number of nodes N or a range MIN:MAX, at least 1 (got '{text}')")
    return low, high


def parse_endpoint(text: str) -> tuple[str, int]:
    match = ENDPOINT.match(text)
    port = int(match.group("port") or DEFAULT_PORT) if match else 0
    if not match or not 0 < port < 65536:
        raise UsageError(f"--rdzv-endpoint: expected HOST:PORT, e.g. node0.example.com:29500 (got '{text}')")
    return match.group("host"), port


def torchrun_command(
    options: TorchrunOptions, worker_args: list[str], env: Mapping[str, str] | None = None
) -> list[str]:
    """``python -m torch.distributed.run ... -m torchport.cli WORKER_ARGS``: one node's agent.

    Without an endpoint it is a single-node ``--standalone`` job (torchrun picks a free port). With one, every
    node's agent meets at a c10d rendezvous, which numbers the nodes itself and lets a restarted or replaced
    node rejoin; giving ``--node-rank`` asks for torchrun's static rendezvous instead (fixed ranks, the
    endpoint is the rank-0 node's master address).
    """
    options.check()
    command = [sys.executable, "-m", AGENT_MODULE, f"--nproc-per-node={options.nproc_per_node}"]
    if options.rdzv_endpoint and options.node_rank is not None:
        host, port = parse_endpoint(options.rdzv_endpoint)
        command += [f"--nnodes={options.nnodes}", f"--node-rank={options.node_rank}"]
        command += [f"--master-addr={host}", f"--master-port={port}"]
    elif options.rdzv_endpoint:
        command += [f"--nnodes={options.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={options.rdzv_endpoint}"]
        command.append(f"--rdzv-id={options.rdzv_id}")
        # torchrun's own environment for --rdzv-conf (PET_RDZV_CONF, e.g. last_call_timeout=10) is kept: the
        # option below would replace it. Its settings win over the ones torchport adds.
        conf = [item for item in (env if env is not None else os.environ).get("PET_RDZV_CONF", "").split(",") if item]
        given = {item.partition("=")[0] for item in conf}
        if options.local_addr and hosts_rendezvous(options.rdzv_endpoint, options.local_addr):
            # torch guesses whether it hosts the c10d store from its hostname; on a host whose name resolves
            # elsewhere that guess is wrong and every node waits for a store nobody serves.
            conf += [] if "is_host" in given else ["is_host=1"]
        if options.dist_timeout_s and "read_timeout" not in given:
            # An agent that loses the rendezvous store (the link to its host died) gives up after this, before
            # its workers' own collective timeout: it stops them and says so in one line (torch's default: 60 s).
            conf.append(f"read_timeout={max(5, min(60, int(options.dist_timeout_s // 2)))}")
        if conf:
            command.append(f"--rdzv-conf={','.join(conf)}")
    else:
        command.append("--standalone")
    if options.local_addr:
        command.append(f"--local-addr={options.local_addr}")
    command.append(f"--max-restarts={options.max_restarts}")
    return [*command, "-m", WORKER_MODULE, *worker_args]


def hosts_rendezvous(endpoint: str, local_addr: str) -> bool:
    """Does the endpoint name this node (the one whose address is ``local_addr``)?"""
    host, _ = parse_endpoint(endpoint)
    host = host.strip("[]")
    if host == local_addr:
        return True
    with contextlib.suppress(OSError):
        return local_addr in {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    return False


def agent_env(local_addr: str | None, debug: bool = False, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the agent (and so every worker) needs in its environment beyond what it inherits."""
    env = os.environ if env is None else env
    extra = {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}  # torchrun would set it (with a banner)
    if debug:
        extra["TORCHPORT_DEBUG"] = "1"
    else:
        # c10d warns with C++ stack dumps when a peer goes away; the one-line error says it better.
        extra["TORCH_CPP_LOG_LEVEL"] = env.get("TORCH_CPP_LOG_LEVEL", "ERROR")
    if local_addr and "GLOO_SOCKET_IFNAME" not in env:
        name = interface_of(local_addr)
        if name is None:
            found = ", ".join(f"{n} {a}" for n, a in sorted(interfaces().items())) or "none"
            raise UsageError(f"--local-addr {local_addr}: no interface of this host has that address (found: {found})")
        extra["GLOO_SOCKET_IFNAME"] = name  # gloo would otherwise pick by hostname, the guess --local-addr replaces
    return extra


# --- network interfaces (Linux, IPv4): which one gloo uses ------------------------------------------------------


@dataclass(frozen=True)
class Interface:
    name: str
    address: str
    source: str  # how gloo chose it
    fallback: bool = False  # gloo fell back to the loopback: other hosts cannot reach this rank

    def describe(self) -> str:
        return f"{self.name} {self.address} ({self.source})"


def interfaces() -> dict[str, str]:
    """Interface name -> its IPv4 address, for the interfaces that have one."""
    import fcntl
    import struct

    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                found[name] = socket.inet_ntoa(packed[20:24])
    return found


def interface_of(address: str) -> str | None:
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(address).is_loopback:
            return "lo"
    return next((name for name, addr in interfaces().items() if addr == address), None)


def gloo_interface(env: Mapping[str, str] | None = None) -> Interface:
    """The interface gloo binds to, chosen as gloo does: GLOO_SOCKET_IFNAME, else the first address the
    hostname resolves to that this host can bind, else the loopback."""
    env = os.environ if env is None else env
    if env.get("GLOO_SOCKET_IFNAME"):
        name = env["GLOO_SOCKET_IFNAME"]
        return Interface(name, interfaces().get(name, "?"), "GLOO_SOCKET_IFNAME")
    hostname = socket.gethostname()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(hostname, None, socket.AF_INET, socket.SOCK_STREAM):
            address = str(info[4][0])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((address, 0))
            except OSError:
                continue
            if ipaddress.ip_address(address).is_loopback:
                return Interface(
                    "lo",
                    address,
                    f"hostname {hostname} resolves to the loopback; other hosts cannot reach this rank: pass"
                    " --local-addr ADDRESS (or set GLOO_SOCKET_IFNAME)",
                    fallback=True,
                )
            return Interface(interface_of(address) or "?", address, f"hostname {hostname}")
    return Interface(
        "lo",
        "127.0.0.1",
        f"hostname {hostname} does not resolve to an address of this host; other hosts cannot reach this rank:"
        " pass --local-addr ADDRESS (or set GLOO_SOCKET_IFNAME)",
        fallback=True,
    )


def worker_args(config: Path, run_dir: Path, overrides: list[str], resume: bool, debug: bool) -> list[str]:
    """The `torchport train` arguments each worker gets; absolute paths, so the workers' cwd cannot matter."""
    args = ["--debug"] if debug else []
    args += ["train", str(config.resolve()), "--run-dir", str(run_dir.resolve())]
    return [*args, *(["--resume"] if resume else []), *overrides]


# --- the torchrun contract, as a worker sees it ---------------------------------------------------------------


def under_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """torchrun (and any launcher following its contract) sets these for every worker."""
    env = os.environ if env is None else env
    return all(key in env for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def env_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank before any process group exists (0 outside torchrun): who may print."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0")) if under_torchrun(env) else 0
