"""The simulator and the driver as separate processes, for tests that kill or signal them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    def __init__(self, root: Path, *, time_scale: float = 0.05) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "comfy_driver.cli", "sim", "--port", str(self.port),
                                      "--root", str(root), "--time-scale", str(time_scale)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                requests.get(self.url + "/system_stats", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("the simulator did not start")

    def stats(self) -> dict[str, Any]:
        return requests.get(self.url + "/sim/stats", timeout=5).json()

    def queue(self) -> dict[str, Any]:
        return requests.get(self.url + "/queue", timeout=5).json()

    def set_faults(self, faults: dict[str, Any]) -> None:
        requests.post(self.url + "/sim/faults", json=faults, timeout=5).raise_for_status()

    def wait_for_more(self, what: str, than: int, proc: subprocess.Popen[str], timeout: float = 30) -> bool:
        """Until the simulator's `what` log ('submissions', 'finished') grows past `than`; False if the
        driver exits first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.stats()[what]) > than:
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.01)
        raise AssertionError(f"nothing new in the simulator's {what} log after {timeout} s")

    def wait_until_running(self, timeout: float = 30) -> None:
        """Until a prompt runs on the simulator (a driver has submitted)."""
        deadline = time.time() + timeout
        while not self.queue()["queue_running"]:
            if time.time() > deadline:
                raise AssertionError(f"no prompt ran on the simulator within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def drive(*args: str, **kw: Any) -> subprocess.Popen[str]:
    """`comfy-drive ARGS` as its own process."""
    return subprocess.Popen([sys.executable, "-m", "comfy_driver.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def resubmitted_after_success(stats: dict[str, Any]) -> list[str]:
    """Graphs the simulator was sent again after it had already finished them successfully."""
    done_at: dict[str, float] = {}
    for item in stats["finished"]:
        if item["status"] == "success":
            done_at.setdefault(item["graph"], item["t"])
    return [s["graph"] for s in stats["submissions"] if s["graph"] in done_at and s["t"] > done_at[s["graph"]]]
