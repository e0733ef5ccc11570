"""What a private STREAMFLOW_HOME looks like after a run (docs/security.md): nothing below it is open
to other users; the home itself is 0700 (0710 to the embedded server's group when run as root)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from streamflow.db.embedded import server_account


def open_to_others(home: Path) -> list[str]:
    """Every path below ``home`` (not following symlinks) that grants anything to 'other', or to its
    group — except the home itself, which as root grants traverse to the embedded server's group."""
    found = []
    for root, dirs, files in os.walk(home):
        for name in [*dirs, *files]:
            path = Path(root) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_IMODE(st.st_mode) & 0o077:
                found.append(f"{path.relative_to(home)} {stat.S_IMODE(st.st_mode):04o}")
    return found


def assert_private_home(home: Path) -> None:
    """The home a demo-like run (and ``down``) left: private, secrets and data files 0600, the
    embedded cluster owned by the server's account."""
    account = server_account()
    st = os.lstat(home)
    if account.is_other:  # root: the embedded server's account may traverse (not list) the home
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o710, account.gid)
    else:
        assert stat.S_IMODE(st.st_mode) == 0o700
    assert open_to_others(home) == []
    # what holds secrets or data, explicitly (the walk above already covers it)
    for path in (
        home / "secrets" / "embedded-postgres-password",
        home / "feast" / "feature_store.yaml",
        home / "mlflow" / "mlflow.db",
        home / "run" / "api.log",
    ):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600, path
    reports = [p for p in (home / "reports").rglob("*") if p.is_file()]
    assert reports and all(stat.S_IMODE(os.lstat(p).st_mode) == 0o600 for p in reports)
    assert os.lstat(home / "pgdata").st_uid == account.uid
