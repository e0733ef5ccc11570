"""The CLI front door: every command answers --help, and every command the deployment
files run exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from streamflow.app.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def all_command_paths() -> list[list[str]]:
    root = get_command(app)
    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:  # type: ignore[no-untyped-def]
        sub = getattr(cmd, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(child, [*prefix, name])
        else:
            paths.append(prefix)

    walk(root, [])
    return paths


def test_the_expected_commands_exist() -> None:
    names = {" ".join(p) for p in all_command_paths()}
    assert {"ingest", "train", "status", "materialize", "seeds generate", "demo", "down", "bootstrap"} <= names


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p))
def test_every_command_has_help(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_commands_run_by_compose_exist() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    names = {" ".join(p) for p in all_command_paths()}
    for svc in compose["services"].values():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd and cmd[0] == "streamflow":
            assert cmd[1] in names, cmd


def test_bad_drift_option_is_a_clean_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["seeds", "generate", "--out", str(tmp_path), "--drift", "nonsense!!"])
    assert result.exit_code == 2
    assert "error" in result.output.lower() or "error" in (result.stderr or "").lower()
