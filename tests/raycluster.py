"""A real two-node Ray cluster on one machine whose worker node cannot see the driver's cache.

The head node offers no CPUs (``--num-cpus 0``), so every task runs on the worker node. The worker
node is started inside its own mount namespace (``unshare -m``) with a tmpfs mounted over the cache
path: there that path is an empty disk of its own, as on a cloud node or a KubeRay pod. Both nodes
(and the driver) run with ``RAY_AUTH_MODE=disabled``: an ``~/.ray/auth_token`` left by another
cluster would otherwise refuse the worker. Needs root (``unshare -m``, ``mount``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
       "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_isolate() -> str | None:
    """None when this machine can start an isolated worker node, else why not."""
    if shutil.which("unshare") is None or not Path(RAY).exists():
        return "no `unshare` or no `ray` command"
    if os.geteuid() != 0:
        return "not root (unshare -m and mount need it)"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /mnt && umount /mnt"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    return None if probe.returncode == 0 else f"unshare -m cannot mount a tmpfs here ({probe.stderr.strip()[:200]})"


class Cluster:
    def __init__(self, base: Path, hidden: Path) -> None:
        self.base, self.hidden = base, hidden
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **ENV}
        self.workers: list[subprocess.Popen] = []
        self.temp = Path(tempfile.mkdtemp(prefix="bray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
        hidden.mkdir(parents=True, exist_ok=True)
        head = [RAY, "start", "--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard", "false",
                "--temp-dir", str(self.temp), "--disable-usage-stats"]  # fmt: skip
        out = subprocess.run(head, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"ray start --head failed: {out.stderr[-2000:]}")

    def add_worker(self, cpus: int = 1) -> subprocess.Popen:
        """A worker node in its own mount namespace, the driver's cache hidden under a tmpfs."""
        start = f"{RAY} start --address {self.address} --num-cpus {cpus} --block --disable-usage-stats"
        log = self.base / f"worker-{len(self.workers)}.log"
        script = f"mount -t tmpfs tmpfs {self.hidden} && exec {start} > {log} 2>&1"
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.workers.append(proc)
        return proc

    def wait_cpus(self, cpus: int, timeout: float = 60.0) -> None:
        code = f"import ray; ray.init(address={self.address!r}, log_to_driver=False); print(int(ray.cluster_resources().get('CPU', 0)))"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120, check=False)
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(cpus)]:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the Ray cluster at {self.address} did not reach {cpus} CPUs in {timeout:.0f}s")

    @staticmethod
    def namespace(pid: int) -> str:
        return os.readlink(f"/proc/{pid}/ns/mnt")

    def kill_worker(self, proc: subprocess.Popen) -> int:
        """SIGKILL every process of that worker node (all processes in its mount namespace); how many."""
        target, killed = None, 0
        for _ in range(50):  # the namespace belongs to unshare's child (sh, then ray)
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False).stdout.split()
            pids = [proc.pid, *map(int, children)]
            spaces = {self.namespace(p) for p in pids if Path(f"/proc/{p}").exists()} - {self.namespace(os.getpid())}
            if spaces:
                target = spaces.pop()
                break
            time.sleep(0.1)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if self.namespace(int(entry.name)) == target:
                        os.kill(int(entry.name), signal.SIGKILL)
                        killed += 1
                except (OSError, ValueError):
                    continue
        proc.wait(timeout=30)
        return killed

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                self.kill_worker(proc)
        # the head's processes, by pid: those naming this cluster's temp folder or address (never `ray stop`,
        # which would stop every Ray cluster of the machine)
        marks = (str(self.temp).encode(), f"127.0.0.1:{self.port}".encode())
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if any(m in (entry / "cmdline").read_bytes() for m in marks):
                        os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    continue
        shutil.rmtree(self.temp, ignore_errors=True)
