"""The API process imports what it serves with (FastAPI, onnxruntime, numpy, the MLflow
client) and not the training stack: a fresh interpreter builds the app and loads an
exported model, then lists its modules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

TRAINING_STACK = ("sklearn", "skl2onnx", "onnx", "evidently", "prefect", "matplotlib", "streamflow.training")


def test_serving_does_not_import_the_training_stack(served: Any, tmp_path: Path) -> None:
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(served.onnx_bytes)
    script = textwrap.dedent(
        f"""
        import json, sys
        from streamflow.serving.server import run_server
        from streamflow.serving.app import create_app
        from streamflow.serving.model_holder import build_loaded_model
        from streamflow.settings import Settings

        app = create_app(Settings(home={str(tmp_path / "home")!r}), start_background=False)
        model = build_loaded_model(
            open({str(model_path)!r}, "rb").read(),
            name="m", alias="production", version="1", run_id="r", as_of="2024-01-31", metrics={{}},
        )
        assert model.version == "1"
        print(json.dumps(sorted(sys.modules)))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "onnxruntime" in modules and "fastapi" in modules
    loaded = sorted(m for m in modules for name in TRAINING_STACK if m == name or m.startswith(name + "."))
    assert loaded == []
