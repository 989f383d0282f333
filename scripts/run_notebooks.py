#!/usr/bin/env python
"""Execute every notebook in notebooks/ top to bottom (nbclient), as CI does.

    python scripts/run_notebooks.py                 # all of notebooks/*.ipynb, in name order
    python scripts/run_notebooks.py notebooks/03_memory_sidecar.ipynb

A notebook fails if a cell raises (the notebooks assert what they show) or if it is stored with outputs:
the repository keeps them clean, and Jupyter fills them in when run. Each runs in a fresh kernel, in
notebooks/ as working directory, with one OpenMP thread (the models are tiny; on a loaded machine extra
threads make them many times slower). Nothing is written back.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 300


def stored_outputs(nb) -> list[int]:
    """Indices of code cells stored with outputs or an execution count."""
    return [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def run(path: Path) -> str | None:
    """Execute one notebook; the error text, or None if it ran clean."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    dirty = stored_outputs(nb)
    if dirty:
        return f"stored with outputs in cells {dirty}: clear them (Edit > Clear Outputs of All Cells)"
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    except CellExecutionError as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        print(f"run_notebooks: no notebooks in {NOTEBOOKS}", file=sys.stderr)
        return 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the kernels inherit it
    failed = 0
    for path in paths:
        start = time.perf_counter()
        error = run(path)
        status = "passed" if error is None else "FAILED"
        print(f"{path.name}: {status} in {time.perf_counter() - start:.1f} s", flush=True)
        if error is not None:
            failed += 1
            print(error, file=sys.stderr)
    # Not pytest's "N passed, N failed" form: CI reads such a line as the test count.
    print(f"run_notebooks: {len(paths) - failed} of {len(paths)} notebooks executed without error")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
