"""The API process imports what it serves with (FastAPI, onnxruntime, numpy, psycopg) and neither
the training stack nor MLflow (it serves deployment records from PostgreSQL): a fresh interpreter
builds the app, loads an exported model, runs a model poll (against a database that refuses the
connection: the failure path is exercised too), then lists its modules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

TRAINING_STACK = ("sklearn", "skl2onnx", "onnx", "evidently", "prefect", "matplotlib", "streamflow.training")
NEVER_IN_THE_API = (*TRAINING_STACK, "mlflow", "scipy", "streamflow.model.registry_client", "streamflow.monitoring")


def test_serving_does_not_import_the_training_stack(served: Any, tmp_path: Path) -> None:
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(served.onnx_bytes)
    script = textwrap.dedent(
        f"""
        import json, sys
        from streamflow.serving.server import run_server
        from streamflow.serving.app import create_app
        from streamflow.serving.model_holder import build_loaded_model
        from streamflow.core.settings import Settings

        app = create_app(Settings(home={str(tmp_path / "home")!r}), start_background=False)
        model = build_loaded_model(
            open({str(model_path)!r}, "rb").read(),
            name="m", alias="production", version="1", run_id="r", as_of="2024-01-31", metrics={{}},
        )
        assert model.version == "1"
        settings = Settings(home={str(tmp_path / "home")!r}, database_url="postgresql://nobody@127.0.0.1:1/none")
        holder = app.state.holder.__class__(settings, app.state.metrics)
        assert holder.check() == "failed" and holder.last_error.startswith("source: deployment table unreadable")
        print(json.dumps(sorted(sys.modules)))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "onnxruntime" in modules and "fastapi" in modules
    assert "psycopg" in modules
    loaded = sorted(m for m in modules for name in NEVER_IN_THE_API if m == name or m.startswith(name + "."))
    assert loaded == []
