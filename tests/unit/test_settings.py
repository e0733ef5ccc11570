from __future__ import annotations

from pathlib import Path

import pytest

from streamflow.core.settings import Settings


def test_defaults_live_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("REPORT_DIR", raising=False)
    s = Settings(home=tmp_path / "h")
    assert s.home.is_absolute()
    for p in (s.pgdata_dir, s.feast_repo_dir, s.mlflow_dir, s.reports_dir, s.evidently_dir, s.run_dir):
        assert p.is_relative_to(s.home)
    assert s.tracking_uri == f"sqlite:///{s.home / 'mlflow' / 'mlflow.db'}"
    assert s.database_url is None and s.db_sslmode == "disable"


def test_env_prefix_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("STREAMFLOW_DATABASE_URL", "postgresql://u:p@db:5432/sf")
    monkeypatch.setenv("STREAMFLOW_API_PORT", "8123")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("REPORT_DIR", str(tmp_path / "ev"))
    s = Settings()
    assert s.home == tmp_path.resolve()
    assert s.database_url == "postgresql://u:p@db:5432/sf"
    assert s.resolved_api_url == "http://127.0.0.1:8123"
    assert s.tracking_uri == "http://mlflow:5000"
    assert s.evidently_dir == tmp_path / "ev"


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFLOW_API_PORT", "not-a-port")
    with pytest.raises(ValueError):
        Settings()


def test_performance_policy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.min_auc, s.max_auc_drop) == (0.70, 0.05)
    monkeypatch.setenv("STREAMFLOW_MIN_AUC", "0.75")
    monkeypatch.setenv("STREAMFLOW_MAX_AUC_DROP", "0.02")
    assert (Settings().min_auc, Settings().max_auc_drop) == (0.75, 0.02)
    monkeypatch.setenv("STREAMFLOW_MIN_AUC", "1.5")
    with pytest.raises(ValueError, match="min_auc"):
        Settings()
