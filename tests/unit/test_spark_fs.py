"""Local paths handed to Spark: Hadoop's ``Path(String)`` takes the string literally (it never
decodes percent escapes), so ``spark_uri`` must not percent-encode, or Spark writes to a directory
the operating-system side (``local_path``) never looks at."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamflow.spark import fs


def test_spark_uri_keeps_the_path_literal(tmp_path: Path) -> None:
    base = tmp_path / "my lake"
    uri = fs.spark_uri(fs.join(str(base), "_months", "as_of=2024-01-31"))
    assert uri == f"file://{base.resolve().as_posix()}/_months/as_of=2024-01-31"
    assert "%" not in uri
    assert fs.local_path(uri) == base.resolve() / "_months" / "as_of=2024-01-31"


def test_spark_uri_of_a_relative_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert fs.spark_uri("lake/users") == f"file://{tmp_path.resolve().as_posix()}/lake/users"


def test_spark_uri_leaves_other_uris_alone() -> None:
    assert fs.spark_uri("s3a://bucket/lake/_months/as_of=2024-01-31") == "s3a://bucket/lake/_months/as_of=2024-01-31"
