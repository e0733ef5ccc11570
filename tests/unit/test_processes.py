"""The process supervisor with real child processes: a real HTTP server (``python -m
http.server`` on a free loopback port), a child that fails at startup, a child that ignores
SIGTERM, and foreign processes behind stale PID files (which must never be signalled)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamflow.core.processes import (
    ManagedProcess,
    Program,
    StartError,
    Supervisor,
    http_ready,
    mentions_home,
    pid_alive,
)
from tests.helpers.net import free_port

HTTP_SERVER = Program(executables=("python*",), args=("-m", "http.server"))
SCRIPT = Program(executables=("python*",), args=("-c",))
TIMEOUT = 30.0


@pytest.fixture
def supervisor(tmp_path: Path) -> Supervisor:
    home = tmp_path / "home"
    home.mkdir()
    return Supervisor(run_dir=home / "run", home=home)


@pytest.fixture
def started(supervisor: Supervisor) -> Iterator[list[ManagedProcess]]:
    """Whatever a test starts through the supervisor is stopped afterwards."""
    procs: list[ManagedProcess] = []
    yield procs
    for proc in procs:
        supervisor.stop_process(proc, timeout=5)


@pytest.fixture
def foreign() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the supervisor did not start (killed and reaped afterwards)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def http_server_argv(supervisor: Supervisor, port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(supervisor.home)]


def start_http_server(supervisor: Supervisor, port: int) -> ManagedProcess:
    url = f"http://127.0.0.1:{port}"
    return supervisor.start(
        "web",
        http_server_argv(supervisor, port),
        program=HTTP_SERVER,
        ready=http_ready(f"{url}/"),
        timeout=TIMEOUT,
        url=url,
        address=("127.0.0.1", port),
    )


def log_says(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


def test_start_ready_idempotent_stop(supervisor: Supervisor, started: list[ManagedProcess]) -> None:
    port = free_port()
    web = start_http_server(supervisor, port)
    started.append(web)
    assert web.url == f"http://127.0.0.1:{port}"
    assert supervisor.pid_file("web").read_text().strip() == str(web.pid)
    assert supervisor.is_ours(web.pid, HTTP_SERVER)
    assert http_ready(f"{web.url}/")()

    again = start_http_server(supervisor, port)  # same home, same arguments: the running one
    assert again.pid == web.pid
    assert Supervisor(supervisor.run_dir, supervisor.home).running("web", HTTP_SERVER) is not None

    assert supervisor.stop("web", HTTP_SERVER) is True
    assert not pid_alive(web.pid)
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(web.pid, os.WNOHANG)
    assert not supervisor.pid_file("web").exists()
    assert not http_ready(f"{web.url}/")()
    assert supervisor.stop("web", HTTP_SERVER) is False  # nothing left to stop


def test_start_with_other_arguments_replaces_the_running_instance(
    supervisor: Supervisor, started: list[ManagedProcess]
) -> None:
    first = start_http_server(supervisor, free_port())
    started.append(first)
    second = start_http_server(supervisor, free_port())
    started.append(second)
    assert second.pid != first.pid
    assert not pid_alive(first.pid)
    assert supervisor.pid_file("web").read_text().strip() == str(second.pid)


def test_child_exiting_during_startup_raises_with_its_log_tail(supervisor: Supervisor) -> None:
    code = "import sys; print('fatal: bad config in', sys.argv[1], flush=True); sys.exit(3)"
    with pytest.raises(StartError) as info:
        supervisor.start(
            "broken",
            [sys.executable, "-c", code, str(supervisor.home / "config.yml")],
            program=SCRIPT,
            ready=lambda: False,
            timeout=TIMEOUT,
        )
    message = str(info.value)
    assert message.startswith("broken exited with code 3 before it was ready")
    assert f"fatal: bad config in {supervisor.home / 'config.yml'}" in message
    assert not supervisor.pid_file("broken").exists()


def test_child_never_ready_is_stopped(supervisor: Supervisor) -> None:
    code = "import time; time.sleep(600)"
    with pytest.raises(StartError, match=r"^sleeper not ready after 1s \(stopped\)"):
        supervisor.start(
            "sleeper",
            [sys.executable, "-c", code, str(supervisor.home)],
            program=SCRIPT,
            ready=lambda: False,
            timeout=1.0,
        )
    assert not supervisor.pid_file("sleeper").exists()


def test_child_ignoring_sigterm_is_killed(
    supervisor: Supervisor, started: list[ManagedProcess], caplog: pytest.LogCaptureFixture
) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(600)"
    )
    log_file = supervisor.log_file("stubborn")
    proc = supervisor.start(
        "stubborn",
        [sys.executable, "-c", code, str(supervisor.home)],
        program=SCRIPT,
        ready=lambda: log_says(log_file, "ignoring SIGTERM"),
        timeout=TIMEOUT,
    )
    started.append(proc)
    with caplog.at_level(logging.WARNING):
        assert supervisor.stop_process(proc, timeout=0.5) is True
    assert not pid_alive(proc.pid)
    assert "event=process_kill name=stubborn" in caplog.text
    assert "reason=ignored_sigterm" in caplog.text


def test_stale_pid_file_of_a_foreign_process_is_never_signalled(
    supervisor: Supervisor, foreign: list[subprocess.Popen[bytes]]
) -> None:
    sleeper = subprocess.Popen(["sleep", "600"])
    foreign.append(sleeper)
    supervisor.run_dir.mkdir(parents=True)
    supervisor.pid_file("web").write_text(f"{sleeper.pid}\n")

    assert not supervisor.is_ours(sleeper.pid, HTTP_SERVER)
    assert supervisor.stop("web", HTTP_SERVER) is False
    assert sleeper.poll() is None  # still running: never signalled
    assert not supervisor.pid_file("web").exists()  # the stale file is gone


def test_same_program_of_another_home_is_never_signalled(
    supervisor: Supervisor, tmp_path: Path, foreign: list[subprocess.Popen[bytes]]
) -> None:
    other_home = Path(f"{supervisor.home}-other")  # a prefix of neither: /…/home vs /…/home-other
    other_home.mkdir()
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(other_home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    foreign.append(other)
    supervisor.run_dir.mkdir(parents=True)
    supervisor.pid_file("web").write_text(f"{other.pid}\n")

    assert Supervisor(other_home / "run", other_home).is_ours(other.pid, HTTP_SERVER)
    assert not supervisor.is_ours(other.pid, HTTP_SERVER)
    assert supervisor.stop("web", HTTP_SERVER) is False
    assert other.poll() is None


def test_port_in_use_is_refused_before_launching(supervisor: Supervisor) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(StartError, match=rf"^cannot start web: 127.0.0.1:{port} is already in use"):
            start_http_server(supervisor, port)
    assert not supervisor.pid_file("web").exists()


def test_start_refuses_a_command_line_it_could_not_recognise_later(supervisor: Supervisor) -> None:
    with pytest.raises(ValueError, match=r"not a `python\* -m http\.server` command line mentioning"):
        supervisor.start(
            "web",
            [sys.executable, "-m", "http.server", str(free_port())],  # the home is not on it
            program=HTTP_SERVER,
            ready=lambda: True,
            timeout=TIMEOUT,
        )
    with pytest.raises(ValueError):
        supervisor.start("web", ["sleep", str(supervisor.home)], program=HTTP_SERVER, ready=lambda: True, timeout=1)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["prometheus", "--storage.tsdb.path=/srv/home/prometheus"], True),
        (["python", "-m", "streamflow", "serve", "--home", "/srv/home"], True),
        (["python", "-m", "streamflow", "serve", "--home", "/srv/home/"], True),
        (["prometheus", "--storage.tsdb.path=/srv/home2/prometheus"], False),
        (["python", "/srv/homework"], False),
        (["/srv/home/bin/prometheus"], False),  # the executable itself does not count
    ],
)
def test_mentions_home(argv: list[str], expected: bool) -> None:
    assert mentions_home(argv, Path("/srv/home")) is expected


def test_program_matches() -> None:
    api = Program(executables=("python*",), args=("-m", "streamflow", "serve"))
    assert api.matches(["/venv/bin/python3.11", "-m", "streamflow", "serve", "--port", "1"])
    assert not api.matches(["/venv/bin/python", "-m", "streamflow", "demo"])
    assert not api.matches(["/usr/bin/sleep", "-m", "streamflow", "serve"])
    assert not api.matches([])
    gateway = Program(executables=("prometheus-pushgateway", "pushgateway"))
    assert gateway.matches(["/usr/bin/prometheus-pushgateway", "--web.listen-address=127.0.0.1:1"])
    assert not gateway.matches(["/usr/bin/prometheus"])
