"""The per-epoch training log every training loop writes (``train_log.csv``).

Columns :data:`LOG_COLUMNS`: ``epoch`` (1-based, finished), ``steps`` (optimizer steps so far),
``loss`` (the epoch's mean loss), ``lr`` (the learning rate of its last step), ``seconds``
(elapsed since the training started, resumed runs included). The file is rewritten whole and
atomically after every epoch, so a reader, or an interrupted run, always finds a valid CSV.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_train_log(Path(tmp) / "train_log.csv", [[1, 4, 0.5, 1e-3, 0.2]])
    ...     print((Path(tmp) / "train_log.csv").read_text(), end="")
    epoch,steps,loss,lr,seconds
    1,4,0.5,0.001,0.2
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["LOG_COLUMNS", "training_seconds", "write_train_log"]

#: the columns of ``train_log.csv``
LOG_COLUMNS = ("epoch", "steps", "loss", "lr", "seconds")


def write_train_log(path: str | os.PathLike[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write ``rows`` (``[epoch, steps, loss, lr, seconds]`` each) as the CSV ``path`` with the
    :data:`LOG_COLUMNS` header, atomically (:func:`pcad.io.atomic_write`)."""
    from pcad.io import atomic_write

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    writer.writerows([[int(e), int(st), repr(float(lo)), repr(float(r)), float(t)]
                      for e, st, lo, r, t in rows])
    with atomic_write(path, "w") as fh:
        fh.write(buf.getvalue())


def training_seconds(path: str | os.PathLike[str]) -> float | None:
    """The ``seconds`` of the last row of the training log ``path`` (how long the training
    loop ran, without feature extraction or calibration), or None when there is no such file
    or no finished epoch.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     log = Path(tmp) / "train_log.csv"
        ...     write_train_log(log, [[1, 4, 0.5, 1e-3, 0.2], [2, 8, 0.4, 1e-3, 0.45]])
        ...     training_seconds(log), training_seconds(Path(tmp) / "missing.csv")
        (0.45, None)
    """
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        return None
    return float(rows[-1]["seconds"]) if rows else None
