"""Starting `specwise serve` for a test, and reading its /metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`specwise serve` in a subprocess on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "specwise.cli", "serve", "--port", str(self.port), *args]
        self.log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would block the server once full
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_listening(self, timeout: float = 60) -> None:
        self._wait(lambda r: r.status_code in (200, 503), timeout)

    def wait_ready(self, timeout: float = 180) -> None:
        self._wait(lambda r: r.status_code == 200, timeout)

    def _wait(self, ok, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"specwise serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if ok(httpx.get(self.url + "/health", timeout=2)):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"specwise serve did not come up on {self.url}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def gauge(url: str, name: str) -> float:
    return next(iter(scrape(url)[name].values()))


def wait_drained(url: str, timeout: float = 30) -> None:
    """Until no request runs or waits (an earlier test's aborts have landed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = scrape(url)
        if not next(iter(m["specwise:num_requests_running"].values())) and not next(iter(m["specwise:num_requests_waiting"].values())):
            return
        time.sleep(0.05)
    raise TimeoutError("requests still running")
