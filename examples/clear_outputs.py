"""Clear the outputs of notebooks in place (what ``tests/test_viz_examples.py`` requires of the
stored examples), with ``nbformat`` alone (in the dev extra; no Jupyter server needed)::

    .venv/bin/python examples/clear_outputs.py examples/*.ipynb

Example:
    >>> import nbformat, pathlib, tempfile
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1", execution_count=3)])
    >>> nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "1"})]
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.ipynb"
    >>> nbformat.write(nb, path)
    >>> clear_outputs(path)
    1
    >>> cell = nbformat.read(path, as_version=4).cells[0]
    >>> cell.outputs, cell.execution_count
    ([], None)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def clear_outputs(path: str | os.PathLike[str]) -> int:
    """Clear the outputs and execution counts of every code cell of the notebook ``path``
    (rewritten only when something changed); returns the number of cells cleared."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    n = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count = [], None
            n += 1
    if n:
        nbformat.write(nb, path)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    for path in parser.parse_args().notebooks:
        print(f"{path}: {clear_outputs(path)} cells cleared")


if __name__ == "__main__":
    main()
