"""Child processes of a test (log file, stopped by their own PID) and the server binaries."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.environment import ENV_ALERTMANAGER_BIN, ENV_PROMETHEUS_BIN


def tail(path: Path | str, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file ("" if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 200 * lines))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """A child process with its output in a log file, stopped by its own PID.

    Started in a new session (so a Ctrl-C on the terminal reaches pytest, which then stops it
    cleanly). ``stop()`` sends SIGTERM, waits ``timeout`` seconds, then SIGKILL — always to this
    PID only.
    """

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    _log_file: Any = field(repr=False, default=None)

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` with stdout+stderr appended to ``log_path``; ``env`` is merged into
        ``os.environ`` (pass a value of "" to blank a variable)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        return cls(name=name, argv=list(argv), log_path=log_path, popen=popen, _log_file=log_file)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def describe_exit(self) -> str:
        """For error messages: exit code (if exited) and the log tail."""
        state = "running" if self.alive() else f"exited with code {self.popen.returncode}"
        return (
            f"{self.name} (pid {self.pid}) {state}; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.popen.returncode


def _binary(env_var: str, default: str) -> str:
    path = os.environ.get(env_var) or shutil.which(Path(default).name) or default
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"{path} not found or not executable (set {env_var})")
    return path


def prometheus_binary() -> str:
    """Path of the Prometheus server binary (``$RISKMON_TEST_PROMETHEUS_BIN`` or Debian's)."""
    return _binary(ENV_PROMETHEUS_BIN, "/usr/bin/prometheus")


def alertmanager_binary() -> str:
    """Path of the Alertmanager binary (``$RISKMON_TEST_ALERTMANAGER_BIN`` or Debian's)."""
    return _binary(ENV_ALERTMANAGER_BIN, "/usr/bin/prometheus-alertmanager")
