"""Validation on Spark (``streamflow.spark.csv_month``) says exactly what the single-machine ingest
says — the same report, word for word — on generated months with faults planted in them; the files
are split into many partitions and small Arrow batches, so line numbers, counts and the first
offending rows are merged across tasks. A clean month is typed exactly as the loader types it."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamflow.core.data_model import SOURCE_TABLES
from streamflow.ingest.reader import ReadLimits
from streamflow.ingest.validation import ValidationError, read_month, validate_month
from streamflow.seeds.generator import generate_months
from streamflow.spark.csv_month import LINE, read_csv_month

pytestmark = pytest.mark.integration

USERS = 1200


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spark_validation_seeds")
    generate_months(root, 1, USERS, 21)
    return root / "month_000"


@pytest.fixture(scope="module")
def small_tasks(spark: Any) -> Iterator[None]:
    """Several input partitions (48 KB splits) and odd-sized Arrow batches: every rule is merged."""
    saved = {
        k: spark.conf.get(k)
        for k in ("spark.sql.files.maxPartitionBytes", "spark.sql.execution.arrow.maxRecordsPerBatch")
    }
    spark.conf.set("spark.sql.files.maxPartitionBytes", "49152")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "293")
    try:
        yield
    finally:
        for k, v in saved.items():
            spark.conf.set(k, v)


def _copy(month: Path, tmp_path: Path) -> Path:
    out = tmp_path / "month"
    shutil.copytree(month, out)
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines), encoding="utf-8")


def _edit(path: Path, fn: Callable[[list[str]], None]) -> None:
    lines = _lines(path)
    fn(lines)
    _write(path, lines)


def single_machine(month_dir: Path, known: set[str], limits: ReadLimits) -> str:
    files, report = read_month(month_dir, limits)
    validate_month(files, report, known)
    return "" if report.ok else str(report)


def on_spark(spark: Any, month_dir: Path, known: set[str], limits: ReadLimits) -> str:
    known_df = spark.createDataFrame([(u,) for u in sorted(known)], "user_id string") if known else None
    try:
        m = read_csv_month(spark, str(month_dir), limits, known_users=known_df)
    except ValidationError as exc:
        return str(exc)
    m.unpersist()
    return ""


def assert_same(spark: Any, month_dir: Path, known: set[str] | None = None, limits: ReadLimits | None = None) -> str:
    limits = limits or ReadLimits()
    want = single_machine(month_dir, known or set(), limits)
    got = on_spark(spark, month_dir, known or set(), limits)
    assert got == want
    return got


def test_a_clean_month_is_typed_as_the_loader_types_it(spark: Any, month: Path, small_tasks: None) -> None:
    files, report = read_month(month, ReadLimits())
    validate_month(files, report, set())
    assert report.ok
    m = read_csv_month(spark, str(month), ReadLimits())
    try:
        for table in SOURCE_TABLES:
            df = m.tables[table.name].orderBy(LINE).toPandas()
            assert m.rows[table.name] == len(df) == USERS
            assert df[LINE].tolist() == list(range(2, USERS + 2))
            for col in table.columns:
                want = files[table.name].typed[col.name].to_pylist()
                assert df[col.name].astype(object).where(df[col.name].notna(), None).tolist() == want, (
                    table.name,
                    col.name,
                )
    finally:
        m.unpersist()


def test_value_rules_and_cross_file_rules(spark: Any, month: Path, small_tasks: None, tmp_path: Path) -> None:
    d = _copy(month, tmp_path)

    def usage(lines: list[str]) -> None:
        for i in range(3, 400, 17):  # 24 negative counts across many batches and partitions
            f = lines[i].split(",")
            f[3] = "-" + f[3]
            lines[i] = ",".join(f)
        lines[50] = lines[50] + ",surplus"
        lines[900] = ",,,,,"
        f = lines[1000].split(",")
        f[1] = "inf"
        lines[1000] = ",".join(f)

    def subscriptions(lines: list[str]) -> None:
        lines.append(lines[10])  # duplicate user
        f = lines[20].split(",")
        f[1], f[4], f[5] = "1e3", "", "maybe"
        lines[20] = ",".join(f)
        lines[30] = lines[30].replace(lines[30].split(",")[1], "12345678901234567890", 1)

    _edit(d / "usage_agg_30d.csv", usage)
    _edit(d / "subscriptions.csv", subscriptions)
    _edit(d / "payments_agg_90d.csv", lambda lines: lines.pop(700))  # a partial user
    _edit(d / "support_agg_90d.csv", lambda lines: lines.insert(5, "0000-NOBODY,1,2.5"))  # unknown user
    _edit(
        d / "users.csv", lambda lines: lines.__setitem__(40, lines[40].replace(lines[40].split(",")[1], "2023-02-30"))
    )
    report = assert_same(spark, d)
    rules = ("must be >= 0", "wrong number of fields", "blank line", "must be a finite number", "must be unique")
    rules += ("must be a boolean", "at most 18 digits", "partial users", "not found in users", "must be a date")
    for rule in rules:
        assert rule in report


def test_file_rules(spark: Any, month: Path, small_tasks: None, tmp_path: Path) -> None:
    d = _copy(month, tmp_path)
    (d / "support_agg_90d.csv").unlink()
    _edit(d / "usage_agg_30d.csv", lambda lines: lines.__setitem__(0, lines[0] + ",skips_7d"))
    raw = (d / "payments_agg_90d.csv").read_bytes().split(b"\n")
    for i in (7, 7, 300, 301, 302, 900):
        raw[i] = raw[i] + b"\x00"
    (d / "payments_agg_90d.csv").write_bytes(b"\n".join(raw))
    raw = (d / "labels.csv").read_bytes().split(b"\n")
    raw[600] = raw[600].replace(b"False", b"Fals\xe9")
    (d / "labels.csv").write_bytes(b"\n".join(raw))
    _edit(d / "subscriptions.csv", lambda lines: lines.__setitem__(0, lines[0].replace("monthly_fee", "fee")))
    report = assert_same(spark, d)
    for rule in ("file is missing", "duplicate column name", "NUL bytes", "not valid UTF-8", "missing column(s)",
                 "unexpected column(s)"):  # fmt: skip
        assert rule in report


def test_more_file_rules(spark: Any, month: Path, small_tasks: None, tmp_path: Path) -> None:
    d = _copy(month, tmp_path)
    (d / "labels.csv").write_bytes(b"\xff\xfe" + "user_id,churn_label\n".encode("utf-16-le"))
    _edit(d / "support_agg_90d.csv", lambda lines: lines.__setitem__(slice(1, None), [""]))  # header + line end
    _edit(d / "usage_agg_30d.csv", lambda lines: lines.__setitem__(slice(1, None), []))  # header, no line end
    real = tmp_path / "elsewhere.csv"
    shutil.move(d / "payments_agg_90d.csv", real)
    (d / "payments_agg_90d.csv").symlink_to(real)
    report = assert_same(spark, d)
    for rule in ("UTF-16", "file has no rows", "not a readable CSV", "symbolic link"):
        assert rule in report
    limits = ReadLimits(max_file_bytes=(month / "users.csv").stat().st_size - 1)
    assert "over the limit" in assert_same(spark, month, limits=limits)


def test_users_known_from_earlier_months(spark: Any, month: Path, small_tasks: None, tmp_path: Path) -> None:
    """Ids outside users.csv are fine when known (the database, the lake); still, every file needs them."""
    d = _copy(month, tmp_path)
    _edit(d / "usage_agg_30d.csv", lambda lines: lines.insert(3, "OLD-0001,1.5,2.5,1,0,0"))
    _edit(d / "labels.csv", lambda lines: lines.insert(3, "OLD-0001,False"))
    report = assert_same(spark, d, known={"OLD-0001", "OLD-0002"})
    assert "users present in the month's other files missing from this file" in report
    assert "not found in users" not in report
