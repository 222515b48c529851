"""Child processes of one benchmark run: started pinned to a core, each in its own process group,
and all stopped again whatever happens (normal end, error, Ctrl-C, SIGTERM).

    with ProcessSet(log_dir) as procs:
        upstream = procs.start("upstream", [sys.executable, "upstream.py"], core=1)
        wait_http(f"http://127.0.0.1:{port}/v1/models", upstream)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


class StartError(RuntimeError):
    """A process did not come up; the message names it, says why and where its log is."""


@dataclass
class Managed:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far (all its threads), from /proc.

        Throughput on a shared machine moves with the neighbours' load; CPU time per request much less,
        so the report shows both.
        """
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class ProcessSet:
    """Owns every process it starts; `stop` and `close` only ever signal those process groups."""

    log_dir: Path
    running: list[Managed] = field(default_factory=list)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(
        self,
        name: str,
        argv: list[str],
        core: int | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Managed:
        log_path = self.log_dir / f"{name}.log"
        full = (["taskset", "-c", str(core)] if core is not None else []) + argv
        with open(log_path, "ab") as log:
            try:
                popen = subprocess.Popen(
                    full,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StartError(
                    f"{name}: cannot run `{argv[0]}` ({exc}); is it installed? see bench/overhead/setup.sh"
                ) from exc
        managed = Managed(name, popen, log_path, full)
        self.running.append(managed)
        return managed

    def stop(self, managed: Managed, timeout: float = 15.0) -> int | None:
        """SIGTERM the group, wait, then SIGKILL; returns the exit code (None if it had to be killed)."""
        if managed in self.running:
            self.running.remove(managed)
        if managed.popen.poll() is not None:
            return managed.popen.returncode
        _signal_group(managed.popen, signal.SIGTERM)
        try:
            return managed.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(managed.popen, signal.SIGKILL)
            managed.popen.wait(5)
            return None

    def close(self) -> None:
        for managed in list(reversed(self.running)):
            self.stop(managed, timeout=5.0)


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(popen.pid, sig)  # start_new_session=True made the child its group's leader
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, managed: Managed, timeout: float, ok: tuple[int, ...] = (200,)) -> float:
    """Poll `url` until it answers one of `ok`; returns seconds waited. Raises StartError with the log tail."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout:
        if not managed.alive():
            raise StartError(
                f"{managed.name} exited with code {managed.popen.returncode} before answering `{url}`; "
                f"log {managed.log_path}:\n{managed.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in ok:
                    return time.monotonic() - started
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return time.monotonic() - started
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise StartError(
        f"{managed.name} did not answer `{url}` within {timeout:.0f} s (last: {last}); "
        f"log {managed.log_path}:\n{managed.log_tail()}"
    )
