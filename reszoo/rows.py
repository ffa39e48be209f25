"""Rows in and out of batch prediction: input tables read row by row, and result rows streamed to a file.

* :func:`read_table` / :func:`read_lines`: ``(FILE:LINE, value)`` for each row of a CSV/TSV column,
  a JSONL key or each line of a text file (a domain's ``predict.py`` reads its table inputs with
  them); a row that cannot be read is an exception in its place, never the end of the run.
* :class:`RowWriter`: rows written as JSON lines, CSV or TSV, one row group at a time in input
  order, and continued by a resumed run (``reszoo predict --resume``).

Used by :mod:`reszoo.predict` and the ``reszoo predict`` command; standard library only.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import InputError, ReszooError

__all__ = ["JSONL_SUFFIXES", "OUT_FORMATS", "TABLE_SUFFIXES", "RowWriter", "read_lines", "read_table"]

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = (".jsonl", ".ndjson")
OUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}



def read_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """``(FILE:LINE, text)`` for every non-blank line of a text file (blank lines are no input)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield f"{path}:{number}", line
    except (OSError, UnicodeDecodeError) as err:
        yield str(path), InputError(f"{path}: cannot be read as UTF-8 text ({err})")


def read_table(path: Path, column: str) -> Iterator[tuple[str, Any]]:
    """``(FILE:LINE, value)`` for each row of a CSV/TSV (a header line naming ``column``), JSONL
    (objects with ``column``, or strings) or plain text file (each non-blank line); a row or file
    that cannot be read is an exception in place of the value."""
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        yield from _read_delimited(path, column, TABLE_SUFFIXES[suffix])
    elif suffix in JSONL_SUFFIXES:
        yield from _read_jsonl(path, column)
    else:
        yield from read_lines(path)


def _read_delimited(path: Path, column: str, delimiter: str) -> Iterator[tuple[str, Any]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                yield str(path), InputError(f"{path}: the file is empty; expected a header line with a {column!r} column")
                return
            if column not in header:
                yield str(path), InputError(f"{path}: no column {column!r} in its header ({', '.join(header)}); "
                                            "name the column of inputs with --column")
                return
            at = header.index(column)
            start = reader.line_num + 1
            for record in reader:
                name, start = f"{path}:{start}", reader.line_num + 1
                if not record or not any(cell.strip() for cell in record):
                    continue  # a blank line is no input
                if len(record) <= at:
                    yield name, InputError(f"{name}: the row has {len(record)} cells, none in column {column!r}")
                else:
                    yield name, record[at]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        yield str(path), InputError(f"{path}: cannot be read as a {'TSV' if delimiter == chr(9) else 'CSV'} file ({err})")


def _read_jsonl(path: Path, column: str) -> Iterator[tuple[str, Any]]:
    for name, line in read_lines(path):
        if isinstance(line, Exception):
            yield name, line
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield name, InputError(f"{name}: not a JSON line ({err})")
            continue
        if isinstance(obj, str):
            yield name, obj
        elif isinstance(obj, dict) and column in obj:
            yield name, obj[column]
        else:
            yield name, InputError(f"{name}: expected a JSON string or an object with a {column!r} key "
                                   "(name the key with --column)")




def _cell(value: Any) -> str:
    """A CSV cell: lists, booleans and numbers as JSON writes them, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class RowWriter:
    """Rows streamed to a ``.jsonl``, ``.csv`` or ``.tsv`` file (``-``: JSON lines on stdout).

    One row per line, the row groups whole and in input order. A CSV/TSV file has a header of
    ``fields`` and ``error`` (every row has every column; a JSON line only the fields it holds).
    With ``resume``, an existing file is continued: :attr:`done` holds the names of the inputs it
    has, and its last row group, which an interrupted run may have left incomplete, is removed to
    be run again. Without ``resume`` an existing file is an error (nothing is overwritten).
    """

    def __init__(self, out: str | os.PathLike[str], fields: Sequence[str] | None, *, resume: bool = False) -> None:
        self.out = os.fspath(out)
        self.done: set[str] = set()
        self._header: list[str] | None = [*fields, "error"] if fields is not None else None
        self._last_flush = time.monotonic()
        if self.out == "-":
            if resume:
                raise InputError("--resume needs --out FILE (a file to continue), not stdout")
            self.format, self._file, self._owned = "jsonl", sys.stdout, False
            return
        suffix = Path(self.out).suffix.lower()
        if suffix not in OUT_FORMATS:
            raise InputError(f"--out {self.out}: expected a file name ending in {', '.join(OUT_FORMATS)} (or - for stdout)")
        self.format = OUT_FORMATS[suffix]
        path = Path(self.out)
        if path.is_dir():
            raise InputError(f"--out {self.out} is a folder; give a file name ending in {', '.join(OUT_FORMATS)}")
        existing = path.exists() and path.stat().st_size > 0
        if existing and not resume:
            raise InputError(f"--out {self.out} already exists; pass --resume to continue it (its inputs are skipped), "
                             "or remove it")
        new_file = True
        if existing:
            new_file = self._resume(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed by close())
        self._owned = True
        if self.format != "jsonl":
            self._csv = csv.writer(self._file, delimiter="," if self.format == "csv" else "\t", lineterminator="\n")
            if new_file and self._header is not None:
                self._csv.writerow(self._header)

    # ----------------------------------------------------------------- resuming

    def _resume(self, path: Path) -> bool:
        """Read what ``path`` holds into :attr:`done`, cut its last row group off; True when nothing is left."""
        records = self._records(path)  # (start offset, input name, complete)
        header_end = 0
        if self.format != "jsonl":
            if not records or not records[0][2]:
                raise InputError(f"--out {self.out}: its first line is not a complete header; remove the file")
            header = records[0][1]
            if self._header is None:
                self._header = header
            elif header != self._header:
                raise InputError(f"--out {self.out} has the columns {', '.join(header)}, this run writes "
                                 f"{', '.join(self._header)}; give another --out")
            header_end = records[1][0] if len(records) > 1 else path.stat().st_size
            records = records[1:]
        cut = records[-1][0] if records else header_end
        if records:
            last = records[-1][1]
            for start, name, _ in reversed(records):  # the whole last group: it may lack rows
                if name != last:
                    break
                cut = start
        for start, name, _ in records:
            if start < cut:
                self.done.add(name)
        os.truncate(path, cut)
        return cut == 0

    def _records(self, path: Path) -> list[tuple[int, Any, bool]]:
        """``(offset, input name, complete)`` of every row of ``path`` (the header's columns first for
        CSV/TSV). A line that is cut off or unreadable ends the list; it must be the last one."""
        data = path.read_bytes()
        lines: list[tuple[int, bytes]] = []
        offset = 0
        for line in data.splitlines(keepends=True):
            lines.append((offset, line))
            offset += len(line)
        records: list[tuple[int, Any, bool]] = []
        if self.format == "jsonl":
            for number, (start, line) in enumerate(lines, start=1):
                row = _json_row(line)
                if row is None or not line.endswith(b"\n"):
                    if number != len(lines):
                        raise InputError(f"--out {self.out}: line {number} is not a row of reszoo predict; "
                                         "cannot resume this file")
                    break
                records.append((start, row["input"], True))
            return records
        position = [0]  # the next line csv.reader will take

        def feed() -> Iterator[str]:
            while position[0] < len(lines):
                position[0] += 1
                yield lines[position[0] - 1][1].decode("utf-8", errors="replace")

        reader = csv.reader(feed(), delimiter="," if self.format == "csv" else "\t")
        width = None
        while position[0] < len(lines):
            start = lines[position[0]][0]
            try:
                record = next(reader)
            except (StopIteration, csv.Error):
                break
            complete = lines[position[0] - 1][1].endswith(b"\n") and (width is None or len(record) == width)
            if not complete:
                break
            if width is None:
                width = len(record)
                records.append((start, record, True))
            else:
                records.append((start, record[0], True))
        return records

    # ----------------------------------------------------------------- writing

    def write(self, group: list[dict[str, Any]]) -> None:
        """Write one input's rows (flushed at least every second, so an interrupted run loses little)."""
        if self.format == "jsonl":
            self._file.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in group))
        else:
            if self._header is None:  # a domain that did not say its fields: the first group's
                self._header = [*dict.fromkeys(k for row in group for k in row if k != "error"), "error"]
                self._csv.writerow(self._header)
            for row in group:
                unknown = set(row) - set(self._header)
                if unknown:
                    raise ReszooError(f"--out {self.out}: rows hold {', '.join(sorted(unknown))}, not among the "
                                      f"columns {', '.join(self._header)}; write JSON lines (.jsonl) instead")
                self._csv.writerow([_cell(row.get(k)) for k in self._header])
        now = time.monotonic()
        if now - self._last_flush >= 1.0:
            self._file.flush()
            self._last_flush = now

    def close(self) -> None:
        self._file.flush()
        if self._owned:
            self._file.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_row(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) and isinstance(row.get("input"), str) else None
