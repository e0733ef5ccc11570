"""Background processes of one STREAMFLOW_HOME: one supervisor for the API, Prometheus, the
Pushgateway and the benchmark's servers.

A :class:`Supervisor` works in a run directory (``settings.run_dir``) for a home directory
(``settings.home``). :meth:`Supervisor.start` launches a command in its own session (it outlives
the CLI that started it and is not hit by its Ctrl-C), with its output appended to
``run_dir/<name>.log`` and its PID in ``run_dir/<name>.pid``, and polls a readiness check while
watching that the child did not exit (a failed start raises :class:`StartError` with the last
lines of the log). Starting again returns the running instance when its PID file, command line
and readiness all match. :meth:`Supervisor.stop` sends SIGTERM, waits, then SIGKILLs the process
group, reaps the child and removes the PID file.

Safety: a PID is only ever signalled if it is alive, its command line is the expected
:class:`Program` *and* mentions this home directory (:meth:`Supervisor.is_ours`). A stale PID
file — the process died and the PID was reused by something else — is removed, never acted on.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil

from streamflow.core.fileio import PRIVATE_MODE, atomic_write_text
from streamflow.core.home import ensure_private_home, private_dir

if TYPE_CHECKING:
    from streamflow.core.settings import Settings

log = logging.getLogger(__name__)

READY_POLL_S = 0.2
STOP_POLL_S = 0.05
KILL_WAIT_S = 10.0
LOG_TAIL_LINES = 20
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}

# Popen objects of the processes started by *this* Python process: polling them reaps them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- plain helpers
def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie — exited, not yet reaped — counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid``; None if it is gone or not readable."""
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return None


def local_address(host: str) -> str:
    """An address to *connect* to for a server bound to ``host`` (wildcards -> loopback)."""
    return "127.0.0.1" if host.strip() in _WILDCARD_HOSTS else host


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port`` (a bind succeeds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def http_ready(url: str, timeout: float = 2.0) -> Callable[[], bool]:
    """A readiness check: ``GET url`` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log (read from its last ``max_bytes``: logs are appended to)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def mentions_home(argv: Sequence[str], home: Path) -> bool:
    """Some argument (after the executable) is ``home`` or a path below it."""
    pattern = re.compile(r"(?:^|[=:,])" + re.escape(str(home)) + r"(?:/|$)")
    return any(pattern.search(arg) for arg in argv[1:])


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Program:
    """How the command line of a managed process looks.

    ``executables``: accepted names (shell patterns) of the executable's basename, e.g.
    ``("prometheus",)`` or ``("python*",)``; ``args``: a run of arguments that must appear in
    that order, e.g. ``("-m", "streamflow", "serve")``."""

    executables: tuple[str, ...]
    args: tuple[str, ...] = ()

    def matches(self, argv: Sequence[str]) -> bool:
        if not argv:
            return False
        exe = Path(argv[0]).name
        if not any(fnmatch.fnmatchcase(exe, pattern) for pattern in self.executables):
            return False
        rest, n = list(argv[1:]), len(self.args)
        return n == 0 or any(tuple(rest[i : i + n]) == self.args for i in range(len(rest) - n + 1))

    def __str__(self) -> str:
        return " ".join(["|".join(self.executables), *self.args])


@dataclass(frozen=True)
class ManagedProcess:
    """A process started by a :class:`Supervisor` (or found running from its PID file)."""

    name: str
    pid: int
    program: Program
    argv: tuple[str, ...]
    pid_file: Path
    log_file: Path
    url: str = ""


class StartError(RuntimeError):
    """A managed process could not be started: it exited, never became ready, or its port is taken."""


# --------------------------------------------------------------------------- the supervisor
class Supervisor:
    """Starts, finds and stops the named background processes of one home directory."""

    def __init__(self, run_dir: Path, home: Path) -> None:
        self.run_dir = Path(run_dir)
        self.home = Path(home)

    @classmethod
    def for_settings(cls, settings: Settings) -> Supervisor:
        return cls(settings.run_dir, settings.home)

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    # -- identification
    def is_ours(self, pid: int, program: Program) -> bool:
        """``pid`` is alive, runs ``program`` and mentions this home on its command line."""
        if not _alive(pid):
            return False
        argv = read_cmdline(pid)
        if not argv:
            return False
        return program.matches(argv) and mentions_home(argv, self.home)

    def running(self, name: str, program: Program, url: str = "") -> ManagedProcess | None:
        """The process recorded in ``<name>.pid`` if it is ours; a stale PID file is removed."""
        path = self.pid_file(name)
        if not path.exists():
            return None
        pid = _read_pid(path)
        if pid is not None and self.is_ours(pid, program):
            argv = tuple(read_cmdline(pid) or ())
            return ManagedProcess(name, pid, program, argv, path, self.log_file(name), url)
        log.info("event=stale_pid_file name=%s path=%s pid=%s", name, path, pid)
        path.unlink(missing_ok=True)
        return None

    # -- start
    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        program: Program,
        ready: Callable[[], bool],
        timeout: float,
        url: str = "",
        env: Mapping[str, str] | None = None,
        address: tuple[str, int] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` as ``name`` and wait until ``ready()``; idempotent.

        A running instance of this home started with the same arguments is waited for and
        returned; one started with other arguments is stopped first. ``address`` (host, port):
        refuse to start when something else listens there. ``prepare`` runs only when a process is
        really launched (render its config, create its storage). ``env``: the child's whole
        environment (default: inherited). Raises :class:`StartError` if the child exits or is not
        ready within ``timeout`` seconds (it is then stopped)."""
        argv = [str(a) for a in argv]
        if not program.matches(argv) or not mentions_home(argv, self.home):
            raise ValueError(f"{name}: {argv} is not a `{program}` command line mentioning {self.home}")
        current = self.running(name, program, url)
        if current is not None:
            if list(current.argv[1:]) == argv[1:]:
                self._wait_ready(current, ready, timeout)
                log.info("event=process_already_running name=%s pid=%d url=%s", name, current.pid, url)
                return current
            log.info("event=process_restart name=%s pid=%d reason=other_arguments", name, current.pid)
            self.stop_process(current)
        if address is not None and not port_free(address[1], address[0]):
            raise StartError(f"cannot start {name}: {address[0]}:{address[1]} is already in use by another process")
        ensure_private_home(self.home)
        private_dir(self.run_dir)
        if prepare is not None:
            prepare()
        log_path = self.log_file(name)
        with log_path.open("ab") as log_fh:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        atomic_write_text(self.pid_file(name), f"{proc.pid}\n", mode=PRIVATE_MODE)
        managed = ManagedProcess(name, proc.pid, program, tuple(argv), self.pid_file(name), log_path, url)
        self._wait_ready(managed, ready, timeout)
        log.info("event=process_started name=%s pid=%d url=%s log=%s", name, proc.pid, url, log_path)
        return managed

    def _wait_ready(self, managed: ManagedProcess, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not _alive(managed.pid):
                code = _exit_code(managed.pid)
                self._forget(managed)
                raise StartError(
                    f"{managed.name} exited{'' if code is None else f' with code {code}'} before it was ready; "
                    f"last lines of {managed.log_file}:\n{log_tail(managed.log_file)}"
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(READY_POLL_S)
        self.stop_process(managed)
        raise StartError(
            f"{managed.name} not ready after {timeout:.0f}s (stopped); "
            f"last lines of {managed.log_file}:\n{log_tail(managed.log_file)}"
        )

    # -- stop
    def stop(self, name: str, program: Program, *, timeout: float = 10.0) -> bool:
        """Stop the process of ``<name>.pid`` if it is ours; True if one was running."""
        managed = self.running(name, program)
        return managed is not None and self.stop_process(managed, timeout=timeout)

    def stop_process(self, managed: ManagedProcess, *, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL (its whole session's process group) after ``timeout`` seconds;
        reap it and remove its PID file. Nothing is signalled unless :meth:`is_ours`."""
        pid = managed.pid
        if not self.is_ours(pid, managed.program):
            self._forget(managed)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(STOP_POLL_S)
        if _alive(pid):
            log.warning(
                "event=process_kill name=%s pid=%d reason=ignored_sigterm timeout_s=%g", managed.name, pid, timeout
            )
            _kill_group(pid)
            deadline = time.monotonic() + KILL_WAIT_S
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(STOP_POLL_S)
        self._forget(managed)
        log.info("event=process_stopped name=%s pid=%d", managed.name, pid)
        return True

    def _forget(self, managed: ManagedProcess) -> None:
        child = _CHILDREN.pop(managed.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1.0)
        if _read_pid(managed.pid_file) == managed.pid:
            managed.pid_file.unlink(missing_ok=True)


# --------------------------------------------------------------------------- internals
def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    return pid_alive(pid)


def _exit_code(pid: int) -> int | None:
    child = _CHILDREN.get(pid)
    return child.poll() if child is not None else None


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (started with its own session), else ``pid``."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
