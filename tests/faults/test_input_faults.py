"""Bad and unusual month files, through the real CLI: refused with exit 2 and a message naming
file, line and column (no traceback, nothing changed: status and every table's checksum), or —
for the accepted encodings — loaded exactly as the clean file (every data table's checksum equal
after re-ingesting the month)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.faults import (
    FaultHome,
    as_of,
    assert_clean_failure,
    data_checksums,
    run_cli,
    status_json,
    table_checksums,
)

pytestmark = pytest.mark.integration


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines))


def _edit_line(file: str, line: int, fn: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """Edit physical line ``line`` (1-based, header = 1) of ``file``."""

    def edit(month: Path) -> None:
        lines = _lines(month / file)
        lines[line - 1] = fn(lines[line - 1])
        _write_lines(month / file, lines)

    return edit


def _set_field(file: str, line: int, column: int, value: bytes) -> Callable[[Path], None]:
    def fn(raw: bytes) -> bytes:
        fields = raw.split(b",")
        fields[column] = value
        return b",".join(fields)

    return _edit_line(file, line, fn)


def _insert_line(file: str, after: int, content: bytes) -> Callable[[Path], None]:
    def edit(month: Path) -> None:
        lines = _lines(month / file)
        lines.insert(after, content)
        _write_lines(month / file, lines)

    return edit


def _latin1(month: Path) -> None:
    _set_field("users.csv", 7, 2, "Fémale".encode("latin-1"))(month)


def _symlink(month: Path) -> None:
    target = month.parent / "elsewhere_labels.csv"
    shutil.move(month / "labels.csv", target)
    os.symlink(target, month / "labels.csv")


def _sparse_10gb(month: Path) -> None:
    with (month / "users.csv").open("r+b") as fh:  # sparse: no disk used, 10 GB as far as stat knows
        fh.truncate(10 * 1024**3)


def _ten_million_columns(month: Path) -> None:
    with (month / "subscriptions.csv").open("wb") as fh:
        fh.write(b",".join(b"c%d" % i for i in range(10_000_000)) + b"\n")


def _partial_user(month: Path) -> None:
    lines = _lines(month / "usage_agg_30d.csv")
    removed = lines.pop(10)
    (month.parent / "removed_user.txt").write_bytes(removed.split(b",")[0])
    _write_lines(month / "usage_agg_30d.csv", lines)


REFUSED: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "nul_byte": (
        _edit_line("usage_agg_30d.csv", 5, lambda b: b[:3] + b"\x00" + b[3:]),
        ["usage_agg_30d.csv", "NUL", "line 5"],
    ),
    "latin1": (_latin1, ["users.csv", "not valid UTF-8", "line 7", "Latin-1"]),
    "blank_line": (_insert_line("payments_agg_90d.csv", 4, b""), ["payments_agg_90d.csv", "blank line", "line 5"]),
    "short_row": (
        _edit_line("support_agg_90d.csv", 6, lambda b: b.split(b",")[0]),
        ["support_agg_90d.csv", "wrong number of fields", "line 6"],
    ),
    "float_in_int_column": (
        _set_field("subscriptions.csv", 3, 1, b"3.0"),
        ["subscriptions.csv", "months_active", "must be an integer", "line 3", "'3.0'"],
    ),
    "symlinked_file": (_symlink, ["labels.csv", "symbolic link"]),
    "oversized_file_10gb": (_sparse_10gb, ["users.csv", "over the limit", "STREAMFLOW_INGEST_MAX_FILE_BYTES"]),
    "ten_million_column_header": (
        _ten_million_columns,
        ["subscriptions.csv", "header line is longer", "STREAMFLOW_INGEST_MAX_HEADER_BYTES"],
    ),
    "partial_user": (_partial_user, ["usage_agg_30d.csv", "partial users", "(1 rows)"]),
    "negative_fee": (
        _set_field("subscriptions.csv", 4, 6, b"-12.5"),
        ["subscriptions.csv", "monthly_fee", "must be >= 0", "line 4"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_month_is_refused_and_nothing_changes(fault_home: FaultHome, tmp_path: Path, case: str) -> None:
    edit, needles = REFUSED[case]
    month = tmp_path / "month"
    shutil.copytree(fault_home.month(2), month)
    edit(month)
    status_before = status_json(fault_home.home)
    before = table_checksums(fault_home.settings)
    proc = run_cli(["ingest", str(month), "--as-of", as_of(2), "--no-progress"], fault_home.home)
    extra = []
    if case == "partial_user":
        extra.append((tmp_path / "removed_user.txt").read_text())
    assert_clean_failure(proc, 2, *needles, *extra, "nothing was written")
    assert table_checksums(fault_home.settings) == before
    assert status_json(fault_home.home) == status_before


def _bom(month: Path) -> None:
    path = month / "subscriptions.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _crlf(month: Path) -> None:
    for path in month.iterdir():
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))


def _mixed_line_endings(month: Path) -> None:
    lines = _lines(month / "usage_agg_30d.csv")
    _write_lines(month / "usage_agg_30d.csv", [ln + b"\r" if i % 2 and ln else ln for i, ln in enumerate(lines)])


def _spaces(month: Path) -> None:
    """Leading and trailing spaces around every field of two files (ids included)."""
    for name in ("subscriptions.csv", "labels.csv"):
        lines = _lines(month / name)
        out = [lines[0]] + [b",".join(b" " + f + b"  " for f in ln.split(b",")) if ln else ln for ln in lines[1:]]
        _write_lines(month / name, out)


ACCEPTED: dict[str, Callable[[Path], None]] = {
    "utf8_bom": _bom,
    "crlf": _crlf,
    "mixed_line_endings": _mixed_line_endings,
    "leading_and_trailing_spaces": _spaces,
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_encodings_load_exactly_the_clean_values(fault_home: FaultHome, tmp_path: Path, case: str) -> None:
    """Re-ingesting month 1 from the variant leaves every data table byte-identical."""
    month = tmp_path / "month"
    shutil.copytree(fault_home.month(1), month)
    ACCEPTED[case](month)
    before = data_checksums(fault_home.settings)
    proc = run_cli(["ingest", str(month), "--as-of", as_of(1), "--no-progress"], fault_home.home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert data_checksums(fault_home.settings) == before
    online = status_json(fault_home.home)["online_store"]
    assert isinstance(online, dict) and online["stale"] is False and online["as_of"] == as_of(1)
