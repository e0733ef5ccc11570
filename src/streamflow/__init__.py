"""StreamFlow: an observable churn-prediction ML system."""

import os as _os

# feast.metrics, at import time, points PROMETHEUS_MULTIPROC_DIR at a temp dir of its own
# (for its gunicorn feature server) and so flips prometheus_client into multiprocess mode
# in this process and in every child process. Drop a value inherited that way, then import
# prometheus_client first so its value class is chosen before Feast can interfere; the API
# server sets the variable itself, on purpose, only for `--workers N > 1`.
for _var in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
    if "feast_metrics_" in _os.environ.get(_var, ""):
        del _os.environ[_var]

import prometheus_client as _prometheus_client  # noqa: E402,F401

__version__ = "0.1.0"
