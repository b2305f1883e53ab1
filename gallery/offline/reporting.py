"""What the benchmark and evaluation commands print and keep: their figures as lines and tables
(the one table format, gallery/text_tables.py) and as a JSON file."""

import json
from pathlib import Path

from gallery.text_tables import format_table


def add_json_argument(parser, help: str = "write the figures to this file") -> None:
    """The --json option of every command whose figures FiguresPrinter.save_json writes."""
    parser.add_argument("--json", dest="json_path", help=help)


def write_json(path, figures: dict) -> None:
    Path(path).write_text(json.dumps(figures, indent=2) + "\n")


def dash_if_none(key: str):
    """A column of the record's `key`, "-" where the figure is None (not measured)."""
    return lambda record: "-" if record[key] is None else record[key]


def formatted(key: str, spec: str, suffix: str = ""):
    """A column of the record's `key` written with a format spec (".3f", "+.4f", ".0%")."""
    return lambda record: format(record[key], spec) + suffix


def record_cells(record: dict, columns: dict) -> list:
    """A record's cells: `columns` maps each header to the record's key, or to a function of
    the record for a cell that is formatted or combined."""
    return [cell(record) if callable(cell) else record[cell] for cell in columns.values()]


def record_rows(records, columns: dict) -> list[list]:
    return [record_cells(record, columns) for record in records]


class FiguresPrinter:
    """A command's printed summary: lines, tables (each after an optional blank line and
    title), and the figures written to the --json file when one was given."""

    def __init__(self, stdout):
        self.stdout = stdout

    def line(self, text: str = "") -> None:
        self.stdout.write(text)

    def table(self, headers: list[str], rows: list[list], *, title: str = "", gap=False) -> None:
        if gap:
            self.line()
        if title:
            self.line(title)
        self.line(format_table(headers, rows))

    def records(self, records, columns: dict, *, title: str = "", gap=False) -> None:
        """A table of dicts (figures rows), one column per entry of `columns` (record_rows)."""
        self.table(list(columns), record_rows(records, columns), title=title, gap=gap)

    def save_json(self, path, figures: dict, *, announce: bool = True) -> None:
        if not path:
            return
        write_json(path, figures)
        if announce:
            self.line(f"Wrote {path}")
