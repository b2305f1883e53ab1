"""Plain-text tables for the commands' printed summaries (product and offline commands alike)."""


def format_table(headers: list[str], rows: list[list]) -> str:
    """Right-aligned columns under a rule of dashes, two spaces apart."""
    cells = [[str(value) for value in row] for row in [headers, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = [
        "  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
