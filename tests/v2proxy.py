"""The real comfy-api-proxy as a process in front of a simulator, for the v2 transport's tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .simproc import free_port


class ProxyProcess:
    """`comfy-api-proxy run --comfyui UPSTREAM` on a free local port; `url` is its base URL."""

    def __init__(self, upstream: str, state_dir: Path | None = None) -> None:
        pytest.importorskip("comfy_api_proxy", reason="comfy-api-proxy (the test extra) is not installed")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "comfy_api_proxy.cli", "run", "--comfyui", upstream, "--host", "127.0.0.1",
                "--port", str(self.port)]
        if state_dir is not None:
            argv += ["--state-dir", str(state_dir)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"comfy-api-proxy exited: {self.proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            try:
                if requests.get(self.url + "/api/v2/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("comfy-api-proxy did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
