"""Tidy a notebook that `make execute` has just run, before it is committed.

- Drops the run times that jupyter-execute stamps on every cell (they only add noise to diffs).
- Collapses progress-bar redraws: a stream output that redraws a line with carriage returns
  keeps only the last state of each line, as a terminal would show it.  Such cells are
  tagged `nbval-ignore-output` (a progress bar holds timings), so this changes nothing nbval
  compares; it keeps the stored file and the book's page readable.

    python tests/tidy_notebook.py chapters/05_training_charrnn.ipynb
"""
from __future__ import annotations

import sys

import nbformat


def collapse_carriage_returns(text: str) -> str:
    """'a\\rab\\rabc\\n' -> 'abc\\n': every line as it ends up on a terminal."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def tidy(path: str) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if "nbval-ignore-output" not in cell.metadata.get("tags", []):
            continue                          # compared outputs are stored exactly as produced
        merged = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if merged and merged[-1].get("output_type") == "stream" and merged[-1]["name"] == out["name"]:
                    merged[-1]["text"] += out["text"]
                    continue
            merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream":
                out["text"] = collapse_carriage_returns(out["text"])
        cell["outputs"] = [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]
    nbformat.write(nb, path)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        tidy(p)
