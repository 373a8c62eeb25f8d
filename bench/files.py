"""Replacing a file all at once: the one way this package writes a result, record, figure or download.

A temp file in the target's folder, fsync, then rename: a crash or a reader at the wrong moment sees
the old file or the whole new one, never half a file. This module imports only the standard library,
so every layer (datasets/ included) may use it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Replace `path` with what `write(file)` writes into a binary file; returns `path`.

    The temp file is ".<name>.<random>.tmp" beside it (readers of a folder skip dot files) and is
    removed if `write` raises; the new file gets the usual permissions (0666 less the umask), not
    mkstemp's private 0600, since results are for everyone to read.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace `path` with `text` (UTF-8) all at once; see `write_atomic`."""
    return write_atomic(path, lambda out: out.write(text.encode("utf-8")))


def file_only_matplotlib() -> None:
    """matplotlib on its file-only Agg backend (no display needed), before anything imports pyplot.
    Imported here, on the first figure, so that a command which draws nothing does not pay its start-up
    (~0.6 s)."""
    import matplotlib
    matplotlib.use("Agg")


def subplots(*args, **kwargs):
    """matplotlib's `plt.subplots` on the file-only backend (file_only_matplotlib)."""
    file_only_matplotlib()
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG all at once, then close it (also when writing fails)."""
    try:
        return write_atomic(path, lambda out: fig.savefig(out, dpi=dpi, format="png"))
    finally:
        import matplotlib.pyplot as plt  # only callers that draw need matplotlib
        plt.close(fig)
