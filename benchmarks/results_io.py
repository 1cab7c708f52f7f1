"""Writes a benchmark's result as JSON and as a markdown table."""

import json
import os


def markdown_table(header, rows):
    """A markdown table: `header` a list of column names, `rows` lists of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(output_dir, name, result, markdown):
    """Writes `name`.json (`result`, plain data) and `name`.md (`markdown`)
    under `output_dir`, each atomically; returns the two paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for ext, text in (("json", json.dumps(result, indent=2) + "\n"), ("md", markdown)):
        path = os.path.join(output_dir, f"{name}.{ext}")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths
