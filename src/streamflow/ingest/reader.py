"""Read one month CSV exactly once, safely: a regular file (no symlink, FIFO or device), under
the size caps, UTF-8 (optional BOM), no NUL byte, CRLF or LF; parsed by pyarrow into text
columns (stripped of surrounding whitespace) with the physical line number of every row.

What is parsed here is what validation checks and what the loader sends to PostgreSQL: the
file is never read a second time."""

from __future__ import annotations

import csv
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from streamflow.core.data_model import SourceTable

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ReadLimits:
    """Checked before a byte of the body is read (settings: ``STREAMFLOW_INGEST_MAX_*``)."""

    max_file_bytes: int = 4 * 1024**3
    max_header_bytes: int = 64 * 1024
    max_columns: int = 256


@dataclass(frozen=True)
class FileProblem:
    """A reason the whole file is refused (before or while parsing)."""

    rule: str
    rows: tuple[str, ...] = ()
    count: int = 0


@dataclass
class ParsedFile:
    """The text columns of one CSV (whitespace-stripped), in file order, plus what validation
    derives from them: ``typed`` holds the arrays the loader sends to PostgreSQL."""

    table: SourceTable
    path: Path
    header: list[str]
    columns: dict[str, pa.Array]
    skipped_lines: list[int] = field(default_factory=list)  # malformed rows left out (file refused)
    typed: dict[str, pa.Array] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return self.table.file_name

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def line_of(self, row: int) -> int:
        """Physical line (1-based, header = line 1) of data row ``row``."""
        line = row + 2
        for skipped in self.skipped_lines:
            if skipped <= line:
                line += 1
        return line


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _open_regular(path: Path, limits: ReadLimits) -> tuple[int | None, FileProblem | None]:
    """Open without following a symlink or blocking on a FIFO; refuse what is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, FileProblem(f"file is missing ({path})")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, FileProblem(
                f"is a symbolic link ({path} -> {os.readlink(path)}): refused, copy the file into the month directory"
            )
        return None, FileProblem(f"cannot be opened: {exc.strerror}")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, FileProblem("is not a regular file: refused")
    if st.st_size > limits.max_file_bytes:
        os.close(fd)
        return None, FileProblem(
            f"is {st.st_size:,} bytes, over the limit of {limits.max_file_bytes:,} "
            "(STREAMFLOW_INGEST_MAX_FILE_BYTES): refused before reading"
        )
    if st.st_size == 0:
        os.close(fd)
        return None, FileProblem("is empty (no header line)")
    return fd, None


def _check_header(fd: int, limits: ReadLimits) -> tuple[list[str] | None, FileProblem | None]:
    return parse_header(os.pread(fd, header_probe_bytes(limits), 0), limits)


def header_probe_bytes(limits: ReadLimits) -> int:
    """How many leading bytes of a file :func:`parse_header` needs."""
    return limits.max_header_bytes + len(UTF8_BOM) + 1


def parse_header(head: bytes, limits: ReadLimits) -> tuple[list[str] | None, FileProblem | None]:
    """The column names of a CSV from its first :func:`header_probe_bytes` bytes (whitespace-stripped),
    or why the file is refused (UTF-16, header too long / too wide, NUL byte, not UTF-8)."""
    if head.startswith(UTF16_BOMS):
        return None, FileProblem("is UTF-16 encoded: save it as UTF-8")
    if head.startswith(UTF8_BOM):
        head = head[len(UTF8_BOM) :]
    end = head.find(b"\n")
    if end < 0:
        end = len(head)
        if len(head) > limits.max_header_bytes:
            return None, FileProblem(
                f"header line is longer than {limits.max_header_bytes:,} bytes "
                "(STREAMFLOW_INGEST_MAX_HEADER_BYTES): refused before reading"
            )
    line = head[:end].rstrip(b"\r")
    if line.count(b",") + 1 > limits.max_columns:
        return None, FileProblem(
            f"header has {line.count(b',') + 1:,} columns, over the limit of {limits.max_columns:,} "
            "(STREAMFLOW_INGEST_MAX_COLUMNS): refused before reading"
        )
    if b"\x00" in line:
        return None, FileProblem("NUL byte in the header (line 1): not a text CSV")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, FileProblem("header (line 1) is not valid UTF-8: save the file as UTF-8")
    return [h.strip() for h in next(csv.reader([text]))], None


RULE_NUL_BYTES = "contains NUL bytes: not a text CSV"
RULE_NOT_UTF8_PREFIX = "is not valid UTF-8"


def check_bytes(data: bytes, first_line: int = 1) -> FileProblem | None:
    """NUL bytes or invalid UTF-8 in the body ``data``, whose first byte is on line ``first_line``
    of the file (a part of a file can be checked on its own and keep the file's line numbers)."""
    shift = first_line - 1
    nul = data.find(b"\x00")
    if nul >= 0:
        lines = sorted({_line_at(data, i) + shift for i in _find_all(data, b"\x00", MAX_EXAMPLES)})
        return FileProblem(RULE_NUL_BYTES, tuple(f"line {n}" for n in lines), data.count(b"\x00"))
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = data[exc.start : exc.start + 1].hex()
            line = _line_at(data, exc.start) + shift
            return FileProblem(
                f"{RULE_NOT_UTF8_PREFIX} (byte 0x{bad} at line {line}): "
                "save it as UTF-8 (Latin-1 / Windows-1252 exports are refused)",
                (f"line {line}",),
            )
    return None


def duplicate_header_problem(header: list[str]) -> FileProblem | None:
    if len(set(header)) != len(header):
        dups = sorted({h for h in header if header.count(h) > 1})
        return FileProblem(f"duplicate column name(s) in the header: {dups}")
    return None


RULE_MALFORMED_ROWS = "row has the wrong number of fields"


def malformed_rows_problem(invalid: list[tuple[int, int, str]], n_columns: int) -> FileProblem:
    """Rows with the wrong number of fields: ``invalid`` is (line, fields, text) in file order."""
    examples = tuple(
        f"line {n}: {actual} field(s), expected {n_columns}: {text[:60]!r}"
        for n, actual, text in invalid[:MAX_EXAMPLES]
    )
    return FileProblem(RULE_MALFORMED_ROWS, examples, len(invalid))


def unreadable_problem(exc: Exception) -> FileProblem:
    """pyarrow could not parse the file at all (e.g. a header line without its line end)."""
    return FileProblem(f"not a readable CSV: {str(exc).splitlines()[0]}")


def check_file_start(path: Path, limits: ReadLimits) -> tuple[list[str] | None, FileProblem | None]:
    """The checks made before a byte of the body is read (a regular file, not a symlink, under the
    size cap, not empty; its header): the header, or why the file is refused."""
    fd, problem = _open_regular(path, limits)
    if fd is None:
        return None, problem
    try:
        return _check_header(fd, limits)
    finally:
        os.close(fd)


def _find_all(data: bytes, needle: bytes, limit: int) -> list[int]:
    out: list[int] = []
    start = 0
    while len(out) < limit:
        i = data.find(needle, start)
        if i < 0:
            break
        out.append(i)
        start = i + 1
    return out


def read_csv_file(path: Path, table: SourceTable, limits: ReadLimits) -> tuple[ParsedFile | None, list[FileProblem]]:
    """Read and parse ``path`` once. Returns the parsed file, or None and why it is refused;
    malformed rows (wrong number of fields) are returned as problems alongside the parse."""
    fd, problem = _open_regular(path, limits)
    if fd is None:
        return None, [problem] if problem else []
    try:
        header, problem = _check_header(fd, limits)
        if header is None:
            return None, [problem] if problem else []
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limits.max_file_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > limits.max_file_bytes:  # grew while we looked
        return None, [FileProblem(f"is over the limit of {limits.max_file_bytes:,} bytes: refused")]
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    problem = check_bytes(data)
    if problem is not None:
        return None, [problem]
    problem = duplicate_header_problem(header)
    if problem is not None:
        return None, [problem]

    invalid: list[tuple[int, int, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append((int(row.number or 0), int(row.actual_columns), row.text or ""))
        return "skip"

    try:
        parsed = pacsv.read_csv(
            pa.py_buffer(data),
            # One thread: row numbers of malformed rows are only known single-threaded.
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        return None, [unreadable_problem(exc)]
    del data
    columns = {name: pc.utf8_trim_whitespace(parsed.column(name).combine_chunks()) for name in parsed.column_names}
    out = ParsedFile(
        table=table, path=path, header=header, columns=columns, skipped_lines=sorted(n for n, _, _ in invalid)
    )
    problems = []
    if invalid:
        problems.append(malformed_rows_problem(invalid, len(header)))
    return out, problems
