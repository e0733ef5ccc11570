"""The feature mirror's loader process: ``python -m streamflow.serving.mirror_loader OUT_DIR`` with
``{"settings": …, "conninfo": …}`` on stdin reads every user's features from Feast's PostgreSQL
online store (``serving.features.read_bulk_postgres``) and leaves them in OUT_DIR as ``ids.npy``,
``codes.npy``, ``numeric.npy`` and ``categories.json`` for the API to map. On failure: exit 1 and
a one-line reason in ``OUT_DIR/error.txt``. The API runs it so that the bulk read's CPU, memory
and GIL are never the serving process's; a reload (``"gentle": true``) runs at a lower CPU priority
on one connection without parallel query workers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from streamflow.core.logging_setup import setup_logging
from streamflow.core.settings import Settings
from streamflow.serving.features import read_bulk_postgres


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:])[0])
    request = json.loads(sys.stdin.read())
    settings = Settings.model_validate_json(request["settings"])
    setup_logging(settings.log_level)
    gentle = bool(request.get("gentle"))
    if gentle:  # a reload: the serving process must keep the CPU it needs
        os.nice(settings.feature_reload_nice)
    try:
        ids, codes, cats, numeric = read_bulk_postgres(request["conninfo"], settings, gentle=gentle)
        for name, array in (("ids", ids), ("codes", codes), ("numeric", numeric)):
            np.save(out / f"{name}.npy", np.ascontiguousarray(array))
        (out / "categories.json").write_text(json.dumps([c.tolist() for c in cats]))
    except Exception as exc:  # reported by the API (counted, logged, on /ready)
        text = str(exc).strip()
        (out / "error.txt").write_text(f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
