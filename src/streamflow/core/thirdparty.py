"""Keep third-party noise and side effects out of the user's terminal — at the source, by name.

Two libraries change process-wide state when imported, and a few emit deprecation warnings that
are theirs to fix, not our users':

* Feast, at import, inserts ``warnings.simplefilter("once", DeprecationWarning)`` (and the same for
  RuntimeWarning) in front of every filter — which re-enables every library's deprecation warnings —
  and ``feast.metrics`` points ``PROMETHEUS_MULTIPROC_DIR`` at a temporary directory of its own (for
  its gunicorn feature server, which we do not run), which makes prometheus_client warn on every
  label removal and would put child processes in multiprocess mode. :func:`after_feast_import` undoes
  both; every module that imports Feast calls it right after.
* :data:`THIRD_PARTY_WARNINGS` lists, one by one, the warnings we silence: which library, which
  message, and why it is harmless. Nothing is silenced wholesale: a new warning from our own code, or
  a new one from a library, still shows.

:func:`quiet_third_party_warnings` (called by ``setup_logging`` for every entry point, and by
:func:`after_feast_import`) is idempotent: the filters are (re)installed in front of the list.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Final, cast

MULTIPROC_VARS: Final = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")

# (category name, module regex, message regex): why it is harmless
THIRD_PARTY_WARNINGS: Final[tuple[tuple[str, str, str, str], ...]] = (
    (
        "DeprecationWarning",
        r"evidently\.",
        r"numpy\.core is deprecated",
        "Evidently 0.7.23's legacy test helpers touch numpy.core at import; nothing of ours uses them.",
    ),
    (
        "DeprecationWarning",
        r"litestar\.",
        "",
        "Prefect 3.9's server calls litestar APIs deprecated in litestar 2.23; Prefect's to update.",
    ),
    (
        "SADeprecationWarning",
        r"mlflow\.",
        r"The ``noload`` loader strategy is deprecated",
        "MLflow 3.17's SQLAlchemy store uses a loader SQLAlchemy 2.1 deprecates; MLflow's to update.",
    ),
    (
        "FutureWarning",
        r"(evidently|pandas)\.",
        r".*[Dd]owncasting",
        "pandas 2.3 announces a behaviour change Evidently's internals trigger; results are unaffected.",
    ),
    (
        "UserWarning",
        r"platformdirs\.",
        r"XDG_RUNTIME_DIR is not set",
        "A headless machine has no XDG runtime directory; platformdirs falls back to /tmp, nothing of ours uses it.",
    ),
)


_BUILTIN_CATEGORIES: Final[dict[str, type[Warning]]] = {
    "DeprecationWarning": DeprecationWarning,
    "FutureWarning": FutureWarning,
    "UserWarning": UserWarning,
}


def _category(name: str) -> type[Warning]:
    if name == "SADeprecationWarning":
        from sqlalchemy.exc import SADeprecationWarning

        return SADeprecationWarning
    return _BUILTIN_CATEGORIES[name]


def quiet_third_party_warnings() -> None:
    """Install the filters of :data:`THIRD_PARTY_WARNINGS` in front of the filter list (idempotent)."""
    for category_name, module, message, _why in reversed(THIRD_PARTY_WARNINGS):
        category = _category(category_name)
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def after_feast_import() -> None:
    """Undo what importing Feast did to this process (see the module docstring)."""
    for var in MULTIPROC_VARS:
        if "feast_metrics_" in os.environ.get(var, ""):
            del os.environ[var]
    blanket = {("once", None, DeprecationWarning, None, 0), ("once", None, RuntimeWarning, None, 0)}
    filters = cast(list[tuple[Any, ...]], warnings.filters)
    filters[:] = [f for f in filters if (f[0], f[1], f[2], f[3], f[4]) not in blanket]
    quiet_third_party_warnings()  # (re)adds filters, which also tells the interpreter the list changed
