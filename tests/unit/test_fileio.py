"""Atomic writes: the previous file survives a failed write, no temporary file is left, the mode
is the one asked for (0600 for secrets)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streamflow.core.fileio import PUBLIC_MODE, SECRET_MODE, atomic_write, atomic_write_bytes, atomic_write_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_text_replaces_the_file_with_the_given_mode(tmp_path: Path) -> None:
    target = tmp_path / "feature_store.yaml"
    target.write_text("old")
    target.chmod(0o644)
    atomic_write_text(target, "password: s3cret\n", mode=SECRET_MODE)
    assert target.read_text() == "password: s3cret\n"
    assert mode(target) == 0o600
    atomic_write_bytes(target, b"\x00\x01", mode=PUBLIC_MODE)
    assert target.read_bytes() == b"\x00\x01"
    assert mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["feature_store.yaml"]


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("previous")

    def crashing_writer(tmp: str) -> None:
        Path(tmp).write_text("half of the new")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(target, crashing_writer, mode=PUBLIC_MODE)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_writer_gets_a_path_in_the_target_directory(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    seen: list[Path] = []

    def writer(tmp: str) -> None:
        seen.append(Path(tmp))
        Path(tmp).write_text("{}")

    atomic_write(target, writer, mode=PUBLIC_MODE)
    assert target.read_text() == "{}"
    assert seen[0].parent == tmp_path and seen[0] != target
    assert not seen[0].exists()
