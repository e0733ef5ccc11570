"""One month of the six course CSVs, read and validated on Spark with the single-machine ingest's
rules and messages (``streamflow.ingest.reader`` / ``streamflow.ingest.validation``).

Each file is read by Spark as lines (split across tasks) with their physical line numbers. Every
Arrow batch of lines is checked and parsed by the single-machine code itself: the byte checks
(NUL, UTF-8), pyarrow's CSV parser (malformed rows), and every column rule
(``validation.check_column``), which also produces the typed values the single-machine loader
sends to PostgreSQL. What the batches report is merged per file — counts added, the first
offending rows (by line) kept — into the same :class:`~streamflow.ingest.validation.Violation`
list, in the same order. The rules that span rows (unique user ids, every user in all six files,
ids known to ``users.csv`` or to earlier months) are Spark joins, with the same messages.

A month with any violation raises :class:`~streamflow.ingest.validation.ValidationError` (exit 2):
the report is the single-machine one, word for word (see tests/integration/test_spark_validation.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from streamflow.core.data_model import SOURCE_TABLES, USERS, SourceTable
from streamflow.ingest import reader, validation
from streamflow.ingest.reader import FileProblem, ParsedFile, ReadLimits
from streamflow.ingest.validation import (
    COLUMN_RULES,
    MAX_EXAMPLES,
    RULE_BLANK,
    RULE_NO_ROWS,
    RULE_NOT_IN_USERS,
    RULE_PARTIAL_EXTRA,
    RULE_UNEXPECTED_COLUMNS,
    RULE_UNIQUE,
    ValidationError,
    ValidationReport,
    Violation,
    example_row,
    id_examples,
    rule_missing_columns,
    rule_partial_users,
    users_line_example,
)
from streamflow.spark import fs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SPARK_TYPES = {"text": "string", "date": "date", "bool": "boolean", "int": "bigint", "float": "double"}
ARROW_TYPES = {"text": pa.string(), "date": pa.date32(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}
LINE = "_line"
_KIND = "_kind"
_PROBLEM = "_problem"
_LINE_PREFIX = re.compile(r"^line (\d+)")


def spark_schema(table: SourceTable) -> str:
    """The typed columns of a source table as a Spark DDL schema."""
    return ", ".join(f"`{c.name}` {SPARK_TYPES[c.type]}" for c in table.columns)


# --------------------------------------------------------------------------- one batch of lines
class BatchFile(ParsedFile):
    """Some consecutive parsed rows of a file, with the physical line of each."""

    lines: np.ndarray

    def line_of(self, row: int) -> int:
        return int(self.lines[row])


def _problem_row(record: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "problem", "json": json.dumps(record)}


def _nul_lines(data: bytes, first_line: int) -> list[int]:
    """Lines of the first NUL bytes (with repeats), as the whole-file check counts them."""
    out: list[int] = []
    start = 0
    while len(out) < MAX_EXAMPLES:
        i = data.find(b"\x00", start)
        if i < 0:
            break
        out.append(data.count(b"\n", 0, i) + first_line)
        start = i + 1
    return out


def check_batch(
    table: SourceTable, header: list[str], parse: bool, raw: list[bytes], lines: np.ndarray
) -> tuple[dict[str, pa.Array] | None, np.ndarray, list[dict[str, Any]]]:
    """Check and parse consecutive lines of ``table``'s file (``raw``, physical lines ``lines``).

    Returns the typed columns (None when the file cannot be typed: wrong columns, or not parsed),
    the line of every typed row, and the problems found, as JSON-ready records."""
    problems: list[dict[str, Any]] = []
    first = int(lines[0])
    if int(lines[-1]) - first != len(lines) - 1:
        raise RuntimeError(f"{table.file_name}: a batch of lines is not contiguous ({first}..{int(lines[-1])})")
    data = b"\n".join(raw) + b"\n"
    byte_problem = reader.check_bytes(data, first_line=first)
    if byte_problem is not None:
        record = {"level": "bytes", "rule": byte_problem.rule, "rows": list(byte_problem.rows), "first": first}
        record["count"] = byte_problem.count
        if byte_problem.rule == reader.RULE_NUL_BYTES:
            record["nul_lines"] = _nul_lines(data, first)
        return None, np.zeros(0, np.int64), [record]
    if not parse:
        return None, np.zeros(0, np.int64), problems
    invalid: list[tuple[int, int, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append((int(lines[int(row.number or 1) - 1]), int(row.actual_columns), row.text or ""))
        return "skip"

    parsed = pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(use_threads=False, column_names=header, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(ignore_empty_lines=False, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.string() for h in header}, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    if invalid:
        problems.append(
            {
                "level": "malformed",
                "invalid": [list(x) for x in invalid[:MAX_EXAMPLES]],
                "count": len(invalid),
            }
        )
    bad = {n for n, _, _ in invalid}
    kept = np.asarray([n for n in lines.tolist() if n not in bad], dtype=np.int64) if bad else lines.astype(np.int64)
    columns = {name: pc.utf8_trim_whitespace(parsed.column(name).combine_chunks()) for name in parsed.column_names}
    f = BatchFile(table=table, path=Path(table.file_name), header=header, columns=columns)
    f.lines = kept
    expected = table.column_names
    if sorted(header) != sorted(expected) or len(kept) == 0:
        return None, kept, problems
    problems.append({"level": "rows", "count": len(kept)})
    blank = np.ones(len(kept), dtype=bool)
    for name in expected:
        blank &= np.asarray(pc.equal(columns[name], "").to_numpy(zero_copy_only=False), dtype=bool)
    if blank.any():
        idx = np.flatnonzero(blank)
        problems.append(
            {
                "level": "blank",
                "rows": [f"line {int(kept[i])}" for i in idx[:MAX_EXAMPLES]],
                "count": int(idx.size),
            }
        )
    for col in table.columns:
        for v in validation.check_column(f, col):
            problems.append(
                {"level": "column", "column": v.column, "rule": v.rule, "rows": list(v.rows), "count": v.count}
            )
    return {c.name: f.typed[c.name] for c in table.columns}, kept, problems


def _batches_function(table: SourceTable, header: list[str], parse: bool) -> Any:
    out_schema = pa.schema(
        [
            pa.field(_KIND, pa.string()),
            pa.field(_PROBLEM, pa.string()),
            pa.field(LINE, pa.int64()),
            *(pa.field(c.name, ARROW_TYPES[c.type]) for c in table.columns),
        ]
    )

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            raw = batch.column("raw").to_pylist()
            lines = np.asarray(batch.column(LINE).to_numpy(zero_copy_only=False), dtype=np.int64)
            typed, kept, problems = check_batch(table, header, parse, raw, lines)
            if problems:
                n = len(problems)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(["problem"] * n, pa.string()),
                        pa.array([json.dumps(p) for p in problems], pa.string()),
                        pa.nulls(n, pa.int64()),
                        *(pa.nulls(n, ARROW_TYPES[c.type]) for c in table.columns),
                    ],
                    schema=out_schema,
                )
            if typed is not None and len(kept):
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.nulls(len(kept), pa.string()),
                        pa.nulls(len(kept), pa.string()),
                        pa.array(kept, pa.int64()),
                        *(typed[c.name].cast(ARROW_TYPES[c.type]) for c in table.columns),
                    ],
                    schema=out_schema,
                )

    return run


# --------------------------------------------------------------------------- one file
@dataclass
class FileRead:
    """One file as Spark read it: refused (``problems`` only), or its typed rows."""

    table: SourceTable
    uri: str
    header: list[str] | None
    refusal: list[FileProblem] = field(default_factory=list)  # the file cannot be read at all
    read_problems: list[FileProblem] = field(default_factory=list)  # malformed rows
    batch_problems: list[dict[str, Any]] = field(default_factory=list)
    rows: DataFrame | None = None
    n_rows: int = 0
    cache: DataFrame | None = None  # what to unpersist once the month is done with

    @property
    def refused(self) -> bool:
        return bool(self.refusal)


def _file_start(spark: SparkSession, uri: str, limits: ReadLimits) -> tuple[list[str] | None, FileProblem | None]:
    """The checks before the body is read, with the single-machine reader's messages."""
    if fs.is_local(uri):
        return reader.check_file_start(fs.local_path(uri), limits)
    hfs = fs.HadoopFS(spark, uri)
    st = hfs.status(uri)
    if not st.exists:
        return None, FileProblem(f"file is missing ({uri})")
    if not st.is_file:
        return None, FileProblem("is not a regular file: refused")
    if st.size > limits.max_file_bytes:
        return None, FileProblem(
            f"is {st.size:,} bytes, over the limit of {limits.max_file_bytes:,} "
            "(STREAMFLOW_INGEST_MAX_FILE_BYTES): refused before reading"
        )
    if st.size == 0:
        return None, FileProblem("is empty (no header line)")
    return reader.parse_header(hfs.head(uri, reader.header_probe_bytes(limits)), limits)


def _numbered_lines(spark: SparkSession, uri: str) -> tuple[DataFrame, int]:
    """The file's lines (raw bytes) with their physical line numbers (header = line 1), and how many."""
    from pyspark.sql import functions as F

    text = spark.read.format("text").load(fs.spark_uri(uri))
    base = text.select(
        F.col("value").cast("binary").alias("raw"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_pos"),
    )
    blocks = sorted(
        (int(r["_block"]), int(r["n"]), int(r["p0"]))
        for r in base.groupBy("_block").agg(F.count("*").alias("n"), F.min("_pos").alias("p0")).collect()
    )
    start, first_line, first_pos = 1, {}, {}
    for block, n, p0 in blocks:
        first_line[block], first_pos[block] = start, p0
        start += n
    if not blocks:
        return base.select("raw", F.lit(0).cast("long").alias(LINE)).limit(0), 0
    line_map = F.create_map(*[F.lit(x).cast("long") for b in first_line for x in (b, first_line[b])])
    pos_map = F.create_map(*[F.lit(x).cast("long") for b in first_pos for x in (b, first_pos[b])])
    line = line_map[F.col("_block")] + F.col("_pos") - pos_map[F.col("_block")]
    return base.select("raw", line.cast("long").alias(LINE)), start - 1


def read_file(spark: SparkSession, month_dir: str, table: SourceTable, limits: ReadLimits) -> FileRead:
    """Read, check and type one file (cached; the caller unpersists)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    uri = fs.join(month_dir, table.file_name)
    header, problem = _file_start(spark, uri, limits)
    if header is None:
        return FileRead(table, uri, None, refusal=[problem] if problem else [])
    dup = reader.duplicate_header_problem(header)
    numbered, n_lines = _numbered_lines(spark, uri)
    if n_lines <= 1:
        problem = _header_only_problem(spark, uri)
        if problem is not None:
            return FileRead(table, uri, header, refusal=[problem])
    lines = numbered.filter(F.col(LINE) >= 2)
    out_schema = f"`{_KIND}` string, `{_PROBLEM}` string, `{LINE}` bigint, {spark_schema(table)}"
    checked = lines.mapInArrow(_batches_function(table, header, parse=dup is None), out_schema)
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    records = [json.loads(r[_PROBLEM]) for r in checked.filter(F.col(_KIND).isNotNull()).select(_PROBLEM).collect()]
    byte_records = [r for r in records if r["level"] == "bytes"]
    if byte_records or dup is not None:
        checked.unpersist()
        return FileRead(table, uri, header, refusal=[_merge_bytes(byte_records)] if byte_records else [dup])  # type: ignore[list-item]
    rows = checked.filter(F.col(_KIND).isNull()).drop(_KIND, _PROBLEM)
    malformed = [r for r in records if r["level"] == "malformed"]
    read_problems = []
    if malformed:
        invalid = sorted((tuple(x) for r in malformed for x in r["invalid"]), key=lambda x: x[0])
        problem = reader.malformed_rows_problem([(int(n), int(a), str(t)) for n, a, t in invalid], len(header))
        read_problems.append(dataclasses.replace(problem, count=sum(int(r["count"]) for r in malformed)))
    n_rows = sum(int(r["count"]) for r in records if r["level"] == "rows")
    return FileRead(
        table,
        uri,
        header,
        read_problems=read_problems,
        batch_problems=[r for r in records if r["level"] in ("blank", "column")],
        rows=rows,
        n_rows=n_rows,
        cache=checked,
    )


def _header_only_problem(spark: SparkSession, uri: str) -> FileProblem | None:
    """A file of one line: parsed whole, as the single-machine reader parses it (pyarrow refuses a
    header without its line end)."""
    if fs.is_local(uri):
        data = fs.local_path(uri).read_bytes()
    else:
        hfs = fs.HadoopFS(spark, uri)
        data = hfs.head(uri, hfs.status(uri).size)
    data = data.removeprefix(reader.UTF8_BOM)
    try:
        pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        return reader.unreadable_problem(exc)
    return None


def _line_key(example: str) -> int:
    m = _LINE_PREFIX.match(example)
    return int(m.group(1)) if m else 0


def _merge_bytes(records: list[dict[str, Any]]) -> FileProblem:
    """The whole-file byte check from the batches' (NUL bytes first, else the first bad UTF-8 byte)."""
    nul = [r for r in records if r["rule"] == reader.RULE_NUL_BYTES]
    if nul:
        lines = sorted(n for r in nul for n in r["nul_lines"])[:MAX_EXAMPLES]
        return FileProblem(
            reader.RULE_NUL_BYTES, tuple(f"line {n}" for n in sorted(set(lines))), sum(int(r["count"]) for r in nul)
        )
    first = min(records, key=lambda r: _line_key(r["rows"][0]) if r["rows"] else r["first"])
    return FileProblem(first["rule"], tuple(first["rows"]), int(first["count"]))


def _merge_examples(records: list[dict[str, Any]]) -> tuple[tuple[str, ...], int]:
    rows = sorted((x for r in records for x in r["rows"]), key=_line_key)[:MAX_EXAMPLES]
    return tuple(rows), sum(int(r["count"]) for r in records)


# --------------------------------------------------------------------------- the month
@dataclass
class CsvMonth:
    """A month's typed tables (columns of the schema + ``_line``), by source table name."""

    month_dir: str
    tables: dict[str, DataFrame]
    rows: dict[str, int]
    cached: list[DataFrame] = field(default_factory=list)

    def unpersist(self) -> None:
        for df in self.cached:
            df.unpersist()
        self.cached.clear()


def _examples_by_line(df: DataFrame, column: str) -> tuple[str, ...]:
    """The first offending rows (by line) of ``df`` as the rules show them."""
    from pyspark.sql import functions as F

    first = df.orderBy(LINE).limit(MAX_EXAMPLES).select(LINE, "user_id", F.col(column).alias("_v")).collect()
    return tuple(example_row(int(r[LINE]), r["user_id"], column, r["_v"]) for r in first)


def _column_violations(f: FileRead) -> list[Violation]:
    order = {c.name: i for i, c in enumerate(f.table.columns)}
    merged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in f.batch_problems:
        if r["level"] == "column":
            merged.setdefault((r["column"], r["rule"]), []).append(r)
    keys = sorted(merged, key=lambda k: (order[k[0]], COLUMN_RULES.index(k[1])))
    out = []
    for column, rule in keys:
        rows, n = _merge_examples(merged[(column, rule)])
        out.append(Violation(f.table.file_name, column, rule, rows, n))
    return out


def _validate_file(f: FileRead, report: ValidationReport) -> tuple[bool, bool]:
    """The single-machine ``_validate_file`` but for unique ids (checked with the cross-file rules):
    (whether its ids are checked for uniqueness, whether it takes part in the cross-file checks)."""
    assert f.header is not None
    expected = f.table.column_names
    missing = [c for c in expected if c not in f.header]
    extra = [c for c in f.header if c not in expected]
    if missing:
        report.violations.append(Violation(f.table.file_name, ", ".join(missing), rule_missing_columns(expected)))
    if extra:
        report.violations.append(Violation(f.table.file_name, ", ".join(extra), RULE_UNEXPECTED_COLUMNS))
    if missing or extra:
        return False, False
    if f.n_rows == 0:
        report.violations.append(Violation(f.table.file_name, None, RULE_NO_ROWS))
        return False, False
    blanks = [r for r in f.batch_problems if r["level"] == "blank"]
    if blanks:
        rows, n = _merge_examples(blanks)
        report.violations.append(Violation(f.table.file_name, None, RULE_BLANK, rows, n))
    report.violations.extend(_column_violations(f))
    return True, not blanks


_KNOWN = "_known"


def _id_counts(
    spark: SparkSession, files: dict[str, FileRead], names: list[str], known_users: DataFrame | None
) -> DataFrame:
    """One row per non-empty user id of the month: how many rows it has in each file (``c_<table>``)
    and whether it is known from earlier months (``c__known``) — one shuffle for every cross-file rule."""
    from pyspark.sql import functions as F

    parts = []
    for name in names:
        rows = files[name].rows
        assert rows is not None
        parts.append(rows.select("user_id", F.lit(name).alias("_t")))
    if known_users is not None:
        parts.append(known_users.select("user_id").distinct().select("user_id", F.lit(_KNOWN).alias("_t")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    counts = union.filter(F.col("user_id") != "").groupBy("user_id").pivot("_t", [*names, _KNOWN]).count().fillna(0)
    return counts.select("user_id", *(F.col(f"`{n}`").alias(f"c_{n}") for n in [*names, _KNOWN]))


def _cross_file_checks(
    spark: SparkSession,
    files: dict[str, FileRead],
    checked_ids: list[str],
    usable: set[str],
    all_read: bool,
    report: ValidationReport,
    known_users: DataFrame | None,
    positions: dict[str, int],
) -> None:
    """Unique ids per file, then the single-machine ``_check_population`` (ids outside users.csv
    unless known from earlier months; every user in each of the six files), from one aggregation;
    the offending rows are looked up only for the rules that fail."""
    from pyspark.sql import functions as F

    population = all_read and USERS.name in usable
    others = [t.name for t in SOURCE_TABLES if t is not USERS and t.name in usable and t.name in files]
    names = sorted(set(checked_ids) | ({USERS.name, *others} if population else set()))
    if not names:
        return
    ids = _id_counts(spark, files, names, known_users if population else None).cache()
    try:
        col = {n: F.col(f"c_{n}") for n in [*names, _KNOWN]}
        aggs = [F.sum(F.when(col[n] > 1, col[n]).otherwise(0)).alias(f"dup_{n}") for n in checked_ids]
        if population:
            u = col[USERS.name]
            in_others = sum((F.when(col[o] > 0, 1).otherwise(0) for o in others), F.lit(0))
            known_extra = (u == 0) & (col[_KNOWN] > 0) & (in_others > 0)
            for o in others:
                aggs += [
                    F.sum(F.when((u == 0) & (col[_KNOWN] == 0), col[o]).otherwise(0)).alias(f"unknown_{o}"),
                    F.sum(F.when((u > 0) & (col[o] == 0), u).otherwise(0)).alias(f"missing_{o}"),
                    F.sum(F.when(known_extra & (col[o] == 0), 1).otherwise(0)).alias(f"absent_{o}"),
                ]
        totals: dict[str, Any] = {}
        if aggs:
            row = ids.agg(*aggs).first()
            assert row is not None  # a global aggregation has exactly one row
            totals = row.asDict()
        # A file's unique-id rule comes right after its column rules (the single-machine order).
        for name in reversed([t.name for t in SOURCE_TABLES if t.name in checked_ids]):
            n = int(totals[f"dup_{name}"] or 0)
            if n:
                rows = files[name].rows
                assert rows is not None
                dup = rows.join(ids.filter(col[name] > 1).select("user_id"), on="user_id", how="left_semi")
                report.violations.insert(
                    positions[name],
                    Violation(
                        files[name].table.file_name, "user_id", RULE_UNIQUE, _examples_by_line(dup, "user_id"), n
                    ),
                )
        if not population:
            return
        users = files[USERS.name].rows
        assert users is not None
        for o in others:
            n = int(totals[f"unknown_{o}"] or 0)
            if n:
                rows = files[o].rows
                assert rows is not None
                unknown_ids = ids.filter((col[USERS.name] == 0) & (col[_KNOWN] == 0)).select("user_id")
                unknown = rows.join(unknown_ids, on="user_id", how="left_semi")
                report.violations.append(
                    Violation(
                        files[o].table.file_name, "user_id", RULE_NOT_IN_USERS, _examples_by_line(unknown, "user_id"), n
                    )
                )
        for o in others:
            n = int(totals[f"missing_{o}"] or 0)
            if n:
                missing_ids = ids.filter((col[USERS.name] > 0) & (col[o] == 0)).select("user_id")
                first = users.join(missing_ids, on="user_id", how="left_semi").orderBy(LINE).limit(MAX_EXAMPLES)
                report.violations.append(
                    Violation(
                        files[o].table.file_name,
                        "user_id",
                        rule_partial_users(n),
                        tuple(users_line_example(r["user_id"], int(r[LINE])) for r in first.collect()),
                        n,
                    )
                )
            n = int(totals[f"absent_{o}"] or 0)
            if n:
                absent = (
                    ids.filter(known_extra & (col[o] == 0)).select("user_id").orderBy("user_id").limit(MAX_EXAMPLES)
                )
                report.violations.append(
                    Violation(
                        files[o].table.file_name,
                        "user_id",
                        RULE_PARTIAL_EXTRA,
                        id_examples([r["user_id"] for r in absent.collect()]),
                        n,
                    )
                )
    finally:
        ids.unpersist()


def read_csv_month(
    spark: SparkSession,
    month_dir: str,
    limits: ReadLimits,
    *,
    known_users: DataFrame | None = None,
    require_labels: bool = True,
) -> CsvMonth:
    """Read and validate the six CSVs of ``month_dir`` (a directory or a Hadoop URI); raise
    :class:`ValidationError` with the single-machine report when anything is wrong.

    ``known_users`` (a frame with ``user_id``): users known from earlier months, who may appear in
    the month's files without a row in its users.csv. ``require_labels=False``: a month whose
    labels.csv is absent is read without labels (its labels have not arrived yet)."""
    report = ValidationReport(Path(month_dir))
    reads: dict[str, FileRead] = {}
    refused: dict[str, FileRead] = {}
    tables = list(SOURCE_TABLES)
    if not require_labels:
        labels_uri = fs.join(month_dir, "labels.csv")
        if fs.is_local(labels_uri):
            exists = fs.local_path(labels_uri).exists()
        else:
            exists = fs.HadoopFS(spark, labels_uri).exists(labels_uri)
        if not exists:
            tables = [t for t in tables if t.name != "labels"]
    for table in tables:
        f = read_file(spark, month_dir, table, limits)
        for p in [*f.refusal, *f.read_problems]:
            report.violations.append(Violation(table.file_name, None, p.rule, p.rows, p.count))
        if f.refused:
            refused[table.name] = f
        else:
            reads[table.name] = f
    usable: set[str] = set()
    checked_ids: list[str] = []
    positions: dict[str, int] = {}
    for table in tables:
        read = reads.get(table.name)
        if read is not None:
            typed, cross = _validate_file(read, report)
            positions[table.name] = len(report.violations)
            if typed:
                checked_ids.append(table.name)
            if cross:
                usable.add(table.name)
    _cross_file_checks(spark, reads, checked_ids, usable, len(reads) == len(tables), report, known_users, positions)
    cached = [f.cache for f in reads.values() if f.cache is not None]
    month = CsvMonth(
        month_dir=month_dir,
        tables={name: f.rows for name, f in reads.items() if f.rows is not None},
        rows={name: f.n_rows for name, f in reads.items()},
        cached=cached,
    )
    if not report.ok:
        month.unpersist()
        log.info("event=spark_validation_failed month=%s violations=%d", month_dir, len(report.violations))
        raise ValidationError(report)
    log.info("event=spark_month_read month=%s rows=%s", month_dir, month.rows)
    return month
