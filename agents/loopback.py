"""A two-node Ray cluster on this machine, on loopback only, that always stops.

:class:`LoopbackCluster` runs ``ray start --head`` and ``ray start --address
127.0.0.1:PORT`` as two foreground (``--block``) processes, each in its own
process group, with every address 127.0.0.1, every port chosen free on
127.0.0.1, and both nodes' files under one fresh temporary folder. Each node
gets one CPU and a custom resource naming it (``cloudgym_head`` /
``cloudgym_worker``), so two env runners of one CPU each must land one on
each node, and the log can say which node sampled what.

Ray rewrites 127.0.0.1 into the machine's network address (its
``resolve_ip_for_localhost``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
and with that switch ``ray start --address`` refuses to start a worker node.
So every process here runs with the switch off (addresses stay on loopback),
and the worker node's ``ray start`` runs through
:func:`start_worker_node_on_loopback` (``python -c``, which finds it in the
installed package), which lifts only the refusal and keeps loopback addresses
as given, then calls Ray's own ``ray`` command. Token authentication stays on
(``RAY_AUTH_MODE=token``, Ray's token file).

Leaving the ``with`` block, however it is left (an error, a timeout, Ctrl-C),
stops both nodes: SIGTERM to each ``ray start`` process group, SIGKILL after
a grace period, and then any process still running whose command line names
the cluster's temporary folder is killed by its id. :meth:`leftover_processes`
lists such processes (the test asserts there are none).
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
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"
NODE_RESOURCES = {"head": "cloudgym_head", "worker": "cloudgym_worker"}
"""Custom resource that marks each node (its value is 1)."""


def free_port() -> int:
    """A TCP port free on the loopback address now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


WORKER_NODE_START = "import cloudgym.agents.loopback as m; m.start_worker_node_on_loopback()"
"""``python -c`` program of the worker node's ``ray start`` (its arguments follow it on the command line)."""

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as given (see the module docstring)
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _ray_command(role: str) -> list[str]:
    if role == "head":
        beside = Path(sys.executable).with_name("ray")
        found = str(beside) if beside.exists() else shutil.which("ray")
        if found is None:
            raise FileNotFoundError("the `ray` command is missing: pip install 'cloudgym[rllib]'")
        return [found]
    return [sys.executable, "-c", WORKER_NODE_START]


@contextlib.contextmanager
def loopback_environment() -> Iterator[None]:
    """This process (the driver) with :data:`LOOPBACK_ENV` set, restored afterwards."""
    from ray._private import ray_constants
    from ray._raylet import Config  # type: ignore[attr-defined]

    saved = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    saved_switch = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time: ray.init keeps 127.0.0.1
    Config.initialize("")  # Ray caches RAY_AUTH_MODE in its config; re-read it
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_switch
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Config.initialize("")


class LoopbackCluster:
    """Head and worker Ray nodes on 127.0.0.1, stopped on exit (see the module docstring)."""

    def __init__(self, *, object_store_mb: int = 80, start_timeout_s: float = 90.0, log: Any = print) -> None:
        self.object_store_bytes = object_store_mb * 1024**2
        self.start_timeout_s = start_timeout_s
        self.log = log
        self.temp_dir = Path(tempfile.mkdtemp(prefix="cgray-", dir="/tmp"))  # short: Ray's socket paths are limited
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ start

    def _node_command(self, role: str) -> list[str]:
        cmd = [
            *_ray_command(role),
            "start",
            "--block",
            f"--node-ip-address={LOOPBACK}",
            "--num-cpus=1",
            "--num-gpus=0",
            f"--resources={json.dumps({NODE_RESOURCES[role]: 1})}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        if role == "head":
            cmd += [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
            ]
        else:
            cmd += [f"--address={self.address}"]
        return cmd

    def _start_node(self, role: str) -> None:
        log_file = open(self.temp_dir / f"ray-start-{role}.log", "wb")  # noqa: SIM115 (kept open for the child)
        env = {**os.environ, **LOOPBACK_ENV}
        self.processes[role] = subprocess.Popen(
            self._node_command(role), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        self.log(f"started {role} node: pid {self.processes[role].pid}, log {log_file.name}")

    def _wait(self, what: str, ready: Any) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not ready():
            for role, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the {role} node exited (code {proc.returncode}) while waiting for {what}; "
                        f"see {self.temp_dir / f'ray-start-{role}.log'}"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {self.start_timeout_s:.0f}s")
            time.sleep(0.5)

    def __enter__(self) -> LoopbackCluster:
        try:
            self._start_node("head")
            self._wait(f"the head node on {self.address}", lambda: _port_open(self.port))
            self._start_node("worker")
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_nodes(self, count: int = 2) -> list[dict[str, Any]]:
        """Block until ``count`` nodes are alive (call after ray.init(address=...)); return them."""
        import ray

        def alive() -> list[dict[str, Any]]:
            return [n for n in ray.nodes() if n.get("Alive")]

        self._wait(f"{count} alive nodes", lambda: len(alive()) >= count)
        return alive()

    @staticmethod
    def node_role(node: dict[str, Any]) -> str:
        """'head' or 'worker', from the custom resource the node was started with."""
        resources = node.get("Resources", {})
        for role, resource in NODE_RESOURCES.items():
            if resource in resources:
                return role
        return "unknown"

    @staticmethod
    def node_address(nodes: list[dict[str, Any]], node_id: str) -> str:
        """'IP:node manager port' of a node (both nodes share 127.0.0.1; the port tells them apart)."""
        for node in nodes:
            if node["NodeID"] == node_id:
                return f"{node.get('NodeManagerAddress')}:{node.get('NodeManagerPort')}"
        return "?"

    # ------------------------------------------------------------------ stop

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if exc_type is None and not self.leftover_processes():
            shutil.rmtree(self.temp_dir, ignore_errors=True)  # the logs stay when something went wrong

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop both nodes and anything they started; idempotent.

        A node given SIGTERM drains for up to 30 s before it exits; this
        throwaway cluster has nothing to drain once the driver has
        disconnected, so after ``grace_s`` the process groups get SIGKILL.
        """
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                ray.shutdown()
        # Worker first, then head: the head outlives the nodes that report to it.
        for role in ("worker", "head"):
            proc = self.processes.get(role)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for role in ("worker", "head"):
            proc = self.processes.get(role)
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Children that stayed in the group after `ray start` exited.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in self.leftover_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10.0
        while self.leftover_processes() and time.monotonic() < end:
            time.sleep(0.2)
        left = self.leftover_processes()
        self.log(f"stopped both nodes; Ray processes left: {len(left)}")

    def leftover_processes(self) -> list[int]:
        """Ids of live processes started for this cluster: their command line or environment names its folder."""
        marker = str(self.temp_dir).encode()
        own = {os.getpid()}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in own:
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if marker not in cmdline:
                    continue
                status = (entry / "status").read_text()
            except OSError:
                continue
            if "\nState:\tZ" not in status:  # a zombie has exited already
                found.append(int(entry.name))
        return sorted(found)


@contextlib.contextmanager
def time_limit(seconds: float, error: type[BaseException] = TimeoutError) -> Iterator[None]:
    """Raise ``error`` in the main thread after ``seconds`` (SIGALRM), so ``finally`` blocks still run.

    Outside the main thread, or without POSIX timers, signals cannot interrupt: no limit then.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise error(f"time limit of {seconds:g} s reached")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def start_worker_node_on_loopback() -> None:
    """``ray start`` (arguments from ``sys.argv``) for a worker node, loopback addresses kept; see WORKER_NODE_START."""
    from ray._private import ray_constants, services
    from ray.scripts.scripts import main as ray_main

    ray_constants.ENABLE_RAY_CLUSTER = True  # allow `ray start --address` (a worker node)
    original = services.resolve_ip_for_localhost

    def keep_loopback(host: str) -> str:
        return host if host.startswith("127.") else original(host)

    services.resolve_ip_for_localhost = keep_loopback
    ray_main()
