"""Reading a month once: size caps, encodings, malformed rows, symlinks, partial users — and the
typed columns that are loaded equal what was validated (no database)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from streamflow.ingest.reader import ReadLimits
from streamflow.ingest.validation import read_month, validate_month
from streamflow.seeds.generator import generate_months


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (path,) = generate_months(tmp_path_factory.mktemp("seeds"), months=1, users=60, seed=3)
    return path


def copy(month: Path, tmp_path: Path) -> Path:
    out = tmp_path / "m"
    out.mkdir(parents=True)
    for f in month.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def errors(month: Path, limits: ReadLimits | None = None) -> str:
    files, report = read_month(month, limits)
    validate_month(files, report, set())
    return "\n".join(str(v) for v in report.violations)


def test_generated_month_is_valid_and_typed(month: Path) -> None:
    files, report = read_month(month)
    validate_month(files, report, set())
    assert report.ok, str(report)
    subs = files["subscriptions"]
    assert subs.typed["months_active"].type == pa.int64()
    assert subs.typed["monthly_fee"].type == pa.float64()
    assert subs.typed["paperless_billing"].type == pa.bool_()
    assert files["users"].typed["signup_date"].type == pa.date32()


def test_bom_crlf_and_spaces_give_the_same_typed_values(month: Path, tmp_path: Path) -> None:
    clean, _ = read_month(month)
    validate_month(clean, read_month(month)[1], set())
    m = copy(month, tmp_path)
    raw = (m / "subscriptions.csv").read_bytes().split(b"\n")
    body = [b",".join(b" " + f + b" " for f in ln.split(b",")) if ln else ln for ln in raw[1:]]
    (m / "subscriptions.csv").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join([raw[0], *body]))
    files, report = read_month(m)
    validate_month(files, report, set())
    assert report.ok, str(report)
    for col, arr in clean["subscriptions"].typed.items():
        assert files["subscriptions"].typed[col].equals(arr), col


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda b: b.replace(b"\n", b"\n\x00", 1), ["NUL", "line 2"]),
        (lambda b: b.replace(b"Male", "Mâle".encode("latin-1"), 1), ["not valid UTF-8", "Latin-1"]),
        (lambda b: b"\xff\xfe" + b, ["UTF-16"]),
        (lambda b: b.replace(b"\n", b"\n\n", 2)[: len(b) + 1], ["blank line"]),
        (lambda b: b.replace(b"\n", b"\nshort,row\n", 1), ["wrong number of fields", "line 2"]),
    ],
)
def test_bad_bytes_are_named_with_their_line(month: Path, tmp_path: Path, edit, needles: list[str]) -> None:  # type: ignore[no-untyped-def]
    m = copy(month, tmp_path)
    (m / "users.csv").write_bytes(edit((m / "users.csv").read_bytes()))
    text = errors(m)
    assert "users.csv" in text
    for needle in needles:
        assert needle in text, text


def test_caps_are_checked_before_reading(month: Path, tmp_path: Path) -> None:
    m = copy(month, tmp_path)
    with (m / "labels.csv").open("r+b") as fh:
        fh.truncate(10 * 1024**3)  # sparse
    (m / "usage_agg_30d.csv").write_bytes(b",".join(b"c%d" % i for i in range(100_000)) + b"\n")
    text = errors(m, ReadLimits())
    assert "labels.csv" in text and "over the limit" in text
    assert "usage_agg_30d.csv" in text and "header line is longer" in text
    text = errors(copy(month, tmp_path / "x"), ReadLimits(max_columns=3))
    assert "header has 6 columns, over the limit of 3" in text


def test_symlinked_file_is_refused(month: Path, tmp_path: Path) -> None:
    m = copy(month, tmp_path)
    target = tmp_path / "labels_elsewhere.csv"
    (m / "labels.csv").rename(target)
    os.symlink(target, m / "labels.csv")
    assert "symbolic link" in errors(m)


def test_float_in_int_column_is_refused(month: Path, tmp_path: Path) -> None:
    m = copy(month, tmp_path)
    lines = (m / "payments_agg_90d.csv").read_bytes().split(b"\n")
    uid = lines[3].split(b",")[0]
    lines[3] = uid + b",3.0"
    (m / "payments_agg_90d.csv").write_bytes(b"\n".join(lines))
    text = errors(m)
    assert "failed_payments_90d" in text and "must be an integer" in text and "line 4" in text


def test_partial_user_is_refused_naming_file_count_and_ids(month: Path, tmp_path: Path) -> None:
    m = copy(month, tmp_path)
    lines = (m / "support_agg_90d.csv").read_bytes().split(b"\n")
    gone = [lines.pop(5).split(b",")[0].decode(), lines.pop(9).split(b",")[0].decode()]
    (m / "support_agg_90d.csv").write_bytes(b"\n".join(lines))
    text = errors(m)
    assert "support_agg_90d.csv" in text and "partial users" in text and "(2 rows)" in text
    assert all(u in text for u in gone)
