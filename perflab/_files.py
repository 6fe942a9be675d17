"""Writing result files without clobbering earlier ones."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_new"]


def write_new(path: str | os.PathLike[str], data: bytes, *, replace: bool = False) -> Path:
    """Write ``data`` to ``path``; refuse (FileExistsError) if it exists, unless ``replace``."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory: give a file path (replace=True never deletes one)")
    try:
        with open(target, "wb" if replace else "xb") as file:
            file.write(data)
    except FileExistsError:
        raise FileExistsError(f"{target} exists: pass replace=True to overwrite it") from None
    return target
