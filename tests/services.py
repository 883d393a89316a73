"""Real Mosquitto and InfluxDB servers for tests, each on a free loopback port in a temp folder.

They are the Debian packages (`scripts/test` installs them when missing). A server can be stopped
(politely or with SIGKILL) and started again on the same port and data folder, which is what the
fault tests need: a broker or a database that goes away and comes back.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Self

READY_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_program(name: str) -> str:
    """Debian puts mosquitto in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        msg = f"{name} is not installed; scripts/test installs it (apt-get install {name})"
        raise RuntimeError(msg)
    return found


def _wait_until(
    ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll a readiness condition (a port, /ping) until it holds, the process dies or time is up."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')}"
            raise RuntimeError(msg)
        if ready():
            return
        time.sleep(POLL_INTERVAL_S)
    msg = f"{what} not ready after {READY_TIMEOUT_S} s:\n{log.read_text(errors='replace')}"
    raise RuntimeError(msg)


def _accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class _Server:
    """Start/stop/kill plumbing shared by both servers."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        _wait_until(self.ready, self.name, self.process, self.log_path)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Mosquitto(_Server):
    """A Mosquitto 2 broker with persistence, anonymous access unless a config body is given."""

    name = "mosquitto"

    def __init__(self, workdir: Path, *, extra_config: str = "allow_anonymous true\n") -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.config_path = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(exist_ok=True)
        # As root, Mosquitto drops to the `mosquitto` user and then cannot write its persistence
        # file in our (root-owned) temp folder: sessions would silently not survive a restart.
        user = "" if "\nuser " in f"\n{extra_config}" else f"user {getpass.getuser()}\n"
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{user}"
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            "autosave_interval 1\n"
            f"{extra_config}"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [find_program("mosquitto"), "-c", str(self.config_path)]

    def ready(self) -> bool:
        return _accepts_connections(self.port)


class InfluxDB(_Server):
    """InfluxDB 1.x (Debian ships 1.6.7) speaking the 1.x HTTP API on a free port."""

    name = "influxd"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.rpc_port = free_port()
        self.config_path = workdir / "influxdb.conf"
        self.config_path.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            "[meta]\n"
            f'  dir = "{workdir / "meta"}"\n'
            "[data]\n"
            f'  dir = "{workdir / "data"}"\n'
            f'  wal-dir = "{workdir / "wal"}"\n'
            "  query-log-enabled = false\n"
            "[monitor]\n"
            "  store-enabled = false\n"
            "[http]\n"
            f'  bind-address = "127.0.0.1:{self.port}"\n'
            "  log-enabled = false\n"
            "[logging]\n"
            '  level = "warn"\n'
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [find_program("influxd"), "-config", str(self.config_path)]

    def ready(self) -> bool:
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response,
        ):
            return bool(response.status == 204)
        return False

    def query(self, influxql: str, database: str | None = None) -> dict[str, object]:
        """Run InfluxQL over HTTP; blocking, for test assertions only."""
        params = {"q": influxql}
        if database is not None:
            params["db"] = database
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/query", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, object] = json.loads(response.read())
            return result


class SmallFilesystem:
    """A tmpfs of ``size_kib`` mounted at ``path``: a disk that really fills up.

    Needs root (CI and the development machines run as root); elsewhere the test that asked for
    it is skipped with the reason. ``fill()`` takes every free block with a filler file and
    ``free()`` gives them back, so a test can take the space away and return it mid-run.
    """

    def __init__(self, path: Path, size_kib: int) -> None:
        self.path = path
        self.size_kib = size_kib
        self.filler = path / "filler"

    def __enter__(self) -> Self:
        import pytest  # noqa: PLC0415 - only the tests that mount one need it

        self.path.mkdir(parents=True, exist_ok=True)
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_kib}k", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mount.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {mount.stderr.strip()}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def fill(self) -> None:
        """Write zeros until the file system says it is full."""
        with self.filler.open("ab", buffering=0) as filler:
            for size in (1 << 20, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(bytes(size))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
