"""Loopback ports for tests that start servers or clusters (never anything but 127.0.0.1)."""
from __future__ import annotations

import socket
import time


def free_port() -> int:
    """A port nothing listens on now (the OS's choice on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc, timeout: float = 120) -> None:
    """Wait until something listens on ``port``; fail early if ``proc`` (a Popen) exits first."""
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:2]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listening on {port}")
