"""Validation of one month's CSV files, before anything is written.

Every rule names the file, the column, the rule and a few offending rows, so a bad
export can be fixed without reading a stack trace."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from streamflow.errors import InputError
from streamflow.schema import SOURCE_TABLES, USERS, Column, SourceTable

TRUE_WORDS = frozenset({"true", "t", "1", "yes", "y"})
FALSE_WORDS = frozenset({"false", "f", "0", "no", "n"})
MAX_EXAMPLES = 5


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


def read_month(month_dir: Path) -> tuple[dict[str, pd.DataFrame], ValidationReport]:
    """Read the six CSVs as text (no type guessing) and report missing files."""
    report = ValidationReport(month_dir)
    frames: dict[str, pd.DataFrame] = {}
    for table in SOURCE_TABLES:
        path = month_dir / table.file_name
        if not path.is_file():
            report.violations.append(Violation(table.file_name, None, f"file is missing ({path})"))
            continue
        try:
            frames[table.name] = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            report.violations.append(Violation(table.file_name, None, f"not a readable CSV: {exc}"))
    return frames, report


def _examples(df: pd.DataFrame, mask: pd.Series, column: str) -> tuple[tuple[str, ...], int]:
    bad = df.loc[mask]
    rows = []
    for idx, row in bad.head(MAX_EXAMPLES).iterrows():
        uid = row.get("user_id", "?")
        rows.append(f"line {int(idx) + 2}: user_id={uid!s} {column}={row[column]!r}")  # +2: header, 1-based
    return tuple(rows), int(mask.sum())


def _check_column(table: SourceTable, col: Column, df: pd.DataFrame) -> list[Violation]:
    out: list[Violation] = []
    s = df[col.name].str.strip()
    empty = s == ""

    def add(rule: str, mask: pd.Series) -> None:
        if mask.any():
            rows, n = _examples(df, mask, col.name)
            out.append(Violation(table.file_name, col.name, rule, rows, n))

    if not col.nullable:
        add("must not be empty", empty)
    present = ~empty
    if col.type == "bool":
        low = s.str.lower()
        add("must be a boolean (True/False)", present & ~low.isin(TRUE_WORDS | FALSE_WORDS))
    elif col.type in ("int", "float"):
        num = pd.to_numeric(s.where(present), errors="coerce")
        if col.type == "int":
            bad_type = present & (num.isna() | (num.notna() & (num % 1 != 0)))
            add("must be an integer", bad_type)
        else:
            import numpy as np

            bad_type = present & (num.isna() | ~np.isfinite(num.fillna(0)))
            add("must be a finite number", bad_type)
        if col.non_negative:
            add("must be >= 0", present & num.notna() & (num < 0))
    elif col.type == "date":
        parsed = pd.to_datetime(s.where(present), format="%Y-%m-%d", errors="coerce")
        add("must be a date YYYY-MM-DD", present & parsed.isna())
    return out


def validate_month(frames: dict[str, pd.DataFrame], report: ValidationReport, known_user_ids: set[str]) -> None:
    """Check columns, types, domains, uniqueness and referential integrity in place."""
    for table in SOURCE_TABLES:
        df = frames.get(table.name)
        if df is None:
            continue
        expected = table.column_names
        missing = [c for c in expected if c not in df.columns]
        extra = [c for c in df.columns if c not in expected]
        if missing:
            report.violations.append(
                Violation(table.file_name, ", ".join(missing), f"missing column(s); expected {expected}")
            )
        if extra:
            report.violations.append(Violation(table.file_name, ", ".join(extra), "unexpected column(s)"))
        if missing or extra:
            continue
        if df.empty:
            report.violations.append(Violation(table.file_name, None, "file has no rows"))
            continue
        for col in table.columns:
            report.violations.extend(_check_column(table, col, df))
        ids = df["user_id"].str.strip()
        dup = ids.duplicated(keep=False) & (ids != "")
        if dup.any():
            rows, n = _examples(df, dup, "user_id")
            report.violations.append(Violation(table.file_name, "user_id", "user_id must be unique", rows, n))

    users = frames.get(USERS.name)
    if users is not None and "user_id" in users.columns:
        known = known_user_ids | set(users["user_id"].str.strip())
        for table in SOURCE_TABLES:
            df = frames.get(table.name)
            if table is USERS or df is None or "user_id" not in df.columns:
                continue
            unknown = ~df["user_id"].str.strip().isin(known) & (df["user_id"].str.strip() != "")
            if unknown.any():
                rows, n = _examples(df, unknown, "user_id")
                report.violations.append(Violation(table.file_name, "user_id", "user_id not found in users", rows, n))
