"""STREAMFLOW_HOME is private (streamflow.core.home): created 0700, tightened when its owner left it
open, refused when it is not a private directory of ours; placeholder secrets refused by settings."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamflow.app.cli import app
from streamflow.core.errors import ExitCode
from streamflow.core.home import HomeError, ensure_private_home, private_dir
from streamflow.core.settings import Settings, SettingsError, get_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_home_is_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        home = ensure_private_home(tmp_path / "a" / "home")
    finally:
        os.umask(old)
    assert mode(home) == 0o700
    assert mode(private_dir(home / "secrets")) == 0o700


def test_an_open_home_of_ours_is_tightened_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    (home / "keep.txt").write_text("data")
    with caplog.at_level(logging.WARNING, logger="streamflow.core.home"):
        ensure_private_home(home)
    assert mode(home) == 0o700
    assert (home / "keep.txt").read_text() == "data"  # tightened, not recreated
    assert "event=home_mode_tightened" in caplog.text and "old_mode=0755 new_mode=0700" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamflow.core.home"):
        ensure_private_home(home)  # already private: nothing to say
    assert "home_mode_tightened" not in caplog.text


def test_a_shared_sticky_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(HomeError, match=r"shared directory \(mode 1777"):
        ensure_private_home(shared)
    assert mode(shared) == 0o1777  # left as it was


def test_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "home"
    path.write_text("")
    with pytest.raises(HomeError, match="is not a directory"):
        ensure_private_home(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a directory owned by another user")
def test_a_home_of_another_user_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "theirs"
    home.mkdir(mode=0o700)
    os.chown(home, 65534, 65534)
    with pytest.raises(HomeError, match="belongs to uid 65534, not to you"):
        ensure_private_home(home)


def test_the_cli_refuses_a_shared_home_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setenv("STREAMFLOW_HOME", str(shared))
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.stderr.startswith("error: STREAMFLOW_HOME") and "Traceback" not in result.stderr


# ---- placeholder secrets ---------------------------------------------------------------------
PLACEHOLDER_URL = "postgresql://streamflow_app:change-me-app@postgres:5432/streamflow"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAMFLOW_DATABASE_URL", PLACEHOLDER_URL),
        ("STREAMFLOW_FEAST_DATABASE_URL", PLACEHOLDER_URL.replace("app", "feast")),
        ("MLFLOW_TRACKING_URI", "http://admin:change-me-mlflow@mlflow:5000"),
        ("PREFECT_API_AUTH_STRING", "admin:change-me-prefect"),
        ("STREAMFLOW_DATABASE_URL", "postgresql://u:CHANGE-ME-too@db/x"),
    ],
)
def test_placeholder_secrets_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        get_settings()
    message = str(info.value)
    assert message.startswith(f"{variable} holds a `change-me-…` placeholder secret")
    assert "change-me-app" not in message and "change-me-prefect" not in message  # the value is not echoed
    assert info.value.exit_code == ExitCode.BAD_INPUT


def test_real_secrets_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFLOW_DATABASE_URL", "postgresql://streamflow_app:9f2c4e@postgres:5432/streamflow")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:b7d1a0")
    settings = get_settings()
    assert settings.database_url and settings.prefect_api_auth_string is not None
    assert "b7d1a0" not in repr(settings)  # a SecretStr


def test_several_invalid_settings_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFLOW_DATABASE_URL", PLACEHOLDER_URL)
    monkeypatch.setenv("STREAMFLOW_API_PORT", "eighty")
    with pytest.raises(SettingsError) as info:
        get_settings()
    text = str(info.value)
    assert "\n" not in text and "STREAMFLOW_DATABASE_URL" in text and "STREAMFLOW_API_PORT" in text


def test_the_cli_refuses_placeholders_with_exit_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("STREAMFLOW_HOME", str(home))
    monkeypatch.setenv("STREAMFLOW_DATABASE_URL", PLACEHOLDER_URL)
    for args in (["status"], ["bootstrap"], ["serve"], ["monitor"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == ExitCode.BAD_INPUT, (args, result.output)
        assert result.stderr.startswith("error: STREAMFLOW_DATABASE_URL holds a `change-me-…`"), args
        assert "Traceback" not in result.stderr
    assert not home.exists()


def test_embedded_settings_defaults(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "h")
    assert s.embedded_password_file == s.home / "secrets" / "embedded-postgres-password"
    assert (s.embedded_max_wal_size, s.embedded_checkpoint_timeout) == ("4GB", "15min")
    assert s.resolved_feast_database_url is None
    s = Settings(home=tmp_path / "h", database_url="postgresql://a:b@h/d")
    assert s.resolved_feast_database_url == "postgresql://a:b@h/d"  # one role does both unless told
