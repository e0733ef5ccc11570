"""Validation of one month's CSV files, before anything is written.

Every rule names the file, the column, the rule and a few offending rows, so a bad export can
be fixed without reading a stack trace. Validation runs on the columns parsed once by
``ingest.reader`` and produces, for every column, the typed array the loader sends to
PostgreSQL: what is validated is exactly what is loaded.

Values are stripped of surrounding whitespace (``"A-1 "`` is ``A-1``, in validation and in the
database alike). A month is complete: every user of ``users.csv`` appears exactly once in each
of the five other files, and every user of those files is in ``users.csv`` (or already in the
database) and in all five of them — a partial user is refused, not served with missing
features."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamflow.core.data_model import SOURCE_TABLES, USERS, Column, SourceTable
from streamflow.core.errors import InputError
from streamflow.ingest.reader import ParsedFile, ReadLimits, read_csv_file

TRUE_WORDS = frozenset({"true", "t", "1", "yes", "y"})
FALSE_WORDS = frozenset({"false", "f", "0", "no", "n"})
MAX_EXAMPLES = 5
INT_PATTERN = r"^[+-]?[0-9]{1,18}$"  # always within int64
INT_TOO_LONG = r"^[+-]?[0-9]{19,}$"
FLOAT_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
DATE_PATTERN = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

# Known users of the database, looked up for the few ids a month's files name but its users.csv
# does not: a set (tests) or a function (the loader asks PostgreSQL).
KnownUsers = Collection[str] | Callable[[list[str]], set[str]]

# ---- the rules' words (shared with the Spark engine, streamflow.spark.csv_month) ----------------
RULE_NOT_EMPTY = "must not be empty"
RULE_BOOL = "must be a boolean (True/False)"
RULE_INT = "must be an integer"
RULE_INT_DIGITS = "must be an integer of at most 18 digits"
RULE_FINITE = "must be a finite number"
RULE_NON_NEGATIVE = "must be >= 0"
RULE_DATE = "must be a date YYYY-MM-DD"
# The order in which one column's rules are reported (whatever its type).
COLUMN_RULES: tuple[str, ...] = (
    RULE_NOT_EMPTY,
    RULE_BOOL,
    RULE_INT,
    RULE_INT_DIGITS,
    RULE_FINITE,
    RULE_NON_NEGATIVE,
    RULE_DATE,
)
RULE_UNEXPECTED_COLUMNS = "unexpected column(s)"
RULE_NO_ROWS = "file has no rows"
RULE_BLANK = "blank line (or a row of empty fields)"
RULE_UNIQUE = "user_id must be unique"
RULE_NOT_IN_USERS = "user_id not found in users"
RULE_PARTIAL_EXTRA = "users present in the month's other files missing from this file (partial users)"


def rule_missing_columns(expected: list[str]) -> str:
    return f"missing column(s); expected {expected}"


def rule_partial_users(missing: int) -> str:
    return (
        f"users of users.csv missing from this file (partial users: every user needs a row in each of "
        f"the six files; {missing} missing)"
    )


def example_row(line: int, user_id: object, column: str, value: object) -> str:
    """One offending row as every rule shows it: ``line 12: user_id=7590-VHVEG value='-3'``."""
    return f"line {line}: user_id={user_id!s} {column}={value!r}"


def users_line_example(user_id: str, line: int) -> str:
    """A user of users.csv missing from another file: ``user_id=X (users.csv line N)``."""
    return f"user_id={user_id} (users.csv line {line})"


@dataclass(frozen=True)
class Violation:
    file: str
    column: str | None
    rule: str
    rows: tuple[str, ...] = ()  # "line 12: user_id=7590-VHVEG value='-3'"
    count: int = 0

    def __str__(self) -> str:
        where = f"{self.file}" + (f" column '{self.column}'" if self.column else "")
        more = f" ({self.count} rows)" if self.count else ""
        examples = "".join(f"\n      {r}" for r in self.rows)
        return f"  - {where}: {self.rule}{more}{examples}"


@dataclass
class ValidationReport:
    month_dir: Path
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        head = f"{len(self.violations)} validation error(s) in {self.month_dir}; nothing was written:"
        return "\n".join([head, *(str(v) for v in self.violations)])


class ValidationError(InputError, ValueError):
    def __init__(self, report: ValidationReport):
        super().__init__(str(report))
        self.report = report


MonthFiles = dict[str, ParsedFile]


def read_month(month_dir: Path, limits: ReadLimits | None = None) -> tuple[MonthFiles, ValidationReport]:
    """Read each of the six CSVs once (text columns, stripped) and report what makes a file
    unusable: missing, symlinked, oversized, not UTF-8, NUL bytes, malformed rows."""
    limits = limits or ReadLimits()
    report = ValidationReport(Path(month_dir))
    files: MonthFiles = {}
    for table in SOURCE_TABLES:
        parsed, problems = read_csv_file(Path(month_dir) / table.file_name, table, limits)
        for p in problems:
            report.violations.append(Violation(table.file_name, None, p.rule, p.rows, p.count))
        if parsed is not None:
            files[table.name] = parsed
    return files, report


# ---- per-column rules ---------------------------------------------------------------------
def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def _examples(f: ParsedFile, mask: np.ndarray, column: str) -> tuple[tuple[str, ...], int]:
    idx = np.flatnonzero(mask)
    ids = f.columns.get("user_id")
    values = f.columns[column]
    rows = []
    for i in idx[:MAX_EXAMPLES]:
        uid = ids[int(i)].as_py() if ids is not None else "?"
        rows.append(example_row(f.line_of(int(i)), uid, column, values[int(i)].as_py()))
    return tuple(rows), int(idx.size)


def _valid_dates(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Strict YYYY-MM-DD (a real calendar date), checked once per distinct value."""
    uniques = pc.unique(values).to_pylist()
    parsed: dict[str, date | None] = {}
    for u in uniques:
        try:
            parsed[u] = date.fromisoformat(u) if DATE_PATTERN.match(u) else None
        except ValueError:
            parsed[u] = None
    good = [u for u, d in parsed.items() if d is not None]
    ok = _mask(pc.is_in(values, value_set=pa.array(good, pa.string())))
    typed = pc.cast(pc.if_else(pa.array(ok), values, pa.scalar(None, pa.string())), pa.date32())
    return typed, ok


def check_column(f: ParsedFile, col: Column) -> list[Violation]:
    """The rules of one column (``COLUMN_RULES``, in that order); fills ``f.typed[col.name]``."""
    out: list[Violation] = []
    s = f.columns[col.name]
    empty = _mask(pc.equal(s, ""))
    present = ~empty

    def add(rule: str, mask: np.ndarray) -> None:
        if mask.any():
            rows, n = _examples(f, mask, col.name)
            out.append(Violation(f.file_name, col.name, rule, rows, n))

    if not col.nullable:
        add(RULE_NOT_EMPTY, empty)
    as_null = pa.array(empty)
    if col.type == "bool":
        low = pc.utf8_lower(s)
        is_true = _mask(pc.is_in(low, value_set=pa.array(sorted(TRUE_WORDS))))
        is_false = _mask(pc.is_in(low, value_set=pa.array(sorted(FALSE_WORDS))))
        add(RULE_BOOL, present & ~is_true & ~is_false)
        f.typed[col.name] = pc.if_else(as_null, pa.scalar(None, pa.bool_()), pa.array(is_true))
    elif col.type == "int":
        ok = _mask(pc.match_substring_regex(s, INT_PATTERN))
        too_long = _mask(pc.match_substring_regex(s, INT_TOO_LONG))
        add(RULE_INT, present & ~ok & ~too_long)
        add(RULE_INT_DIGITS, too_long)
        digits = pc.replace_substring_regex(s, r"^\+", "")  # arrow parses "5", not "+5"
        typed = pc.cast(pc.if_else(pa.array(ok), digits, pa.scalar(None, pa.string())), pa.int64())
        if col.non_negative:
            add(RULE_NON_NEGATIVE, _mask(pc.fill_null(pc.less(typed, 0), False)))
        f.typed[col.name] = typed
    elif col.type == "float":
        ok = _mask(pc.match_substring_regex(s, FLOAT_PATTERN))
        typed = pc.cast(pc.if_else(pa.array(ok), s, pa.scalar(None, pa.string())), pa.float64())
        finite = _mask(pc.fill_null(pc.is_finite(typed), False))
        add(RULE_FINITE, present & ~(ok & finite))
        if col.non_negative:
            add(RULE_NON_NEGATIVE, finite & _mask(pc.fill_null(pc.less(typed, 0.0), False)))
        f.typed[col.name] = pc.if_else(pa.array(finite), typed, pa.scalar(None, pa.float64()))
    elif col.type == "date":
        typed, ok = _valid_dates(s)
        add(RULE_DATE, present & ~ok)
        f.typed[col.name] = typed
    else:  # text
        f.typed[col.name] = pc.if_else(as_null, pa.scalar(None, pa.string()), s) if col.nullable else s
    return out


def _duplicates(ids: pa.Array) -> np.ndarray:
    counts = pc.value_counts(ids)
    dup_values = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if len(dup_values) == 0:
        return np.zeros(len(ids), dtype=bool)
    return _mask(pc.and_(pc.is_in(ids, value_set=dup_values), pc.not_equal(ids, "")))


def _validate_file(f: ParsedFile, report: ValidationReport) -> bool:
    """File-level rules; True when its user_ids can take part in the cross-file checks."""
    table: SourceTable = f.table
    expected = table.column_names
    missing = [c for c in expected if c not in f.header]
    extra = [c for c in f.header if c not in expected]
    if missing:
        report.violations.append(Violation(f.file_name, ", ".join(missing), rule_missing_columns(expected)))
    if extra:
        report.violations.append(Violation(f.file_name, ", ".join(extra), RULE_UNEXPECTED_COLUMNS))
    if missing or extra:
        return False
    if f.n_rows == 0:
        report.violations.append(Violation(f.file_name, None, RULE_NO_ROWS))
        return False
    blank = np.ones(f.n_rows, dtype=bool)
    for name in expected:
        blank &= _mask(pc.equal(f.columns[name], ""))
    if blank.any():
        idx = np.flatnonzero(blank)
        report.violations.append(
            Violation(
                f.file_name,
                None,
                RULE_BLANK,
                tuple(f"line {f.line_of(int(i))}" for i in idx[:MAX_EXAMPLES]),
                int(idx.size),
            )
        )
    for col in table.columns:
        report.violations.extend(check_column(f, col))
    dup = _duplicates(f.columns["user_id"])
    if dup.any():
        rows, n = _examples(f, dup, "user_id")
        report.violations.append(Violation(f.file_name, "user_id", RULE_UNIQUE, rows, n))
    return not blank.any()


def _lookup(known: KnownUsers, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    if callable(known):
        return set(known(ids))
    return {u for u in ids if u in known}


def id_examples(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"user_id={u}" for u in sorted(ids)[:MAX_EXAMPLES])


def _check_population(files: MonthFiles, usable: set[str], report: ValidationReport, known: KnownUsers) -> None:
    """Referential integrity and completeness, set-based (hash joins over the parsed ids)."""
    users = files.get(USERS.name)
    if users is None or USERS.name not in usable:
        return
    user_ids = pc.filter(users.columns["user_id"], pc.not_equal(users.columns["user_id"], ""))
    others = [files[t.name] for t in SOURCE_TABLES if t is not USERS and t.name in usable]
    # ids named by the other files but absent from users.csv: known in the database, or not at all
    outside: dict[str, np.ndarray] = {}
    extra_ids: set[str] = set()
    for f in others:
        ids = f.columns["user_id"]
        not_in_users = _mask(pc.invert(pc.is_in(ids, value_set=user_ids))) & _mask(pc.not_equal(ids, ""))
        outside[f.table.name] = not_in_users
        if not_in_users.any():
            extra_ids.update(pc.filter(ids, pa.array(not_in_users)).to_pylist())
    known_extra = _lookup(known, sorted(extra_ids))
    for f in others:
        mask = outside[f.table.name]
        if not mask.any():
            continue
        unknown = mask & ~_mask(pc.is_in(f.columns["user_id"], value_set=pa.array(sorted(known_extra), pa.string())))
        if unknown.any():
            rows, n = _examples(f, unknown, "user_id")
            report.violations.append(Violation(f.file_name, "user_id", RULE_NOT_IN_USERS, rows, n))
    # completeness: the month's population is users.csv plus the known extra ids; every file has all of it
    population_extra = pa.array(sorted(known_extra), pa.string())
    for f in others:
        ids = f.columns["user_id"]
        missing_users = _mask(pc.invert(pc.is_in(user_ids, value_set=ids)))
        if missing_users.any():
            missing = pc.filter(user_ids, pa.array(missing_users)).to_pylist()
            rows_of = pc.index_in(pa.array(missing[:MAX_EXAMPLES], pa.string()), value_set=users.columns["user_id"])
            report.violations.append(
                Violation(
                    f.file_name,
                    "user_id",
                    rule_partial_users(len(missing)),
                    tuple(
                        users_line_example(u, users.line_of(int(r)))
                        for u, r in zip(missing, rows_of.to_pylist(), strict=False)
                    ),
                    len(missing),
                )
            )
        if len(population_extra):
            absent = pc.filter(population_extra, pc.invert(pc.is_in(population_extra, value_set=ids))).to_pylist()
            if absent:
                report.violations.append(
                    Violation(
                        f.file_name,
                        "user_id",
                        RULE_PARTIAL_EXTRA,
                        id_examples(absent),
                        len(absent),
                    )
                )


def validate_month(files: MonthFiles, report: ValidationReport, known_user_ids: KnownUsers) -> None:
    """Check columns, types, domains, uniqueness, completeness and referential integrity in place;
    fill ``ParsedFile.typed`` with the arrays to load."""
    usable: set[str] = set()
    for table in SOURCE_TABLES:
        f = files.get(table.name)
        if f is not None and _validate_file(f, report):
            usable.add(table.name)
    if len(files) == len(SOURCE_TABLES):
        _check_population(files, usable, report, known_user_ids)


def limits_from(settings: object) -> ReadLimits:
    """The read limits of a ``Settings`` object."""
    return ReadLimits(
        max_file_bytes=int(getattr(settings, "ingest_max_file_bytes")),  # noqa: B009
        max_header_bytes=int(getattr(settings, "ingest_max_header_bytes")),  # noqa: B009
        max_columns=int(getattr(settings, "ingest_max_columns")),  # noqa: B009
    )
