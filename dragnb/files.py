"""Where results go, checked before any work: writable folders, output files, atomic writes."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
TEMP_MARK = ".tmp-"  # temporaries are ".<name>.tmp-<random>" beside their final name


def _probe(folder: Path, argument: str) -> None:
    """The one sure test of writability (permissions, read-only mounts, quotas): make and drop a file."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".probe{TEMP_MARK}"):
            pass
    except OSError as exc:
        raise InputError(argument, f"cannot write in {str(folder)!r} ({exc.strerror or exc}); give a writable "
                         "folder") from None


def writable_folder(path: str | Path, argument: str) -> Path:
    """A folder results can be written to, created if missing; a file in its place or no permission is an error."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(argument, f"{str(folder)!r} is a file, not a folder; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(argument, f"cannot create {str(folder)!r} ({exc.strerror or exc}); give a writable "
                         "folder") from None
    _probe(folder, argument)
    return folder


def output_file(path: str | Path, argument: str = "--out", suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Path:
    """An output file that can be written: the right extension, not a folder, in an existing writable folder."""
    out = Path(path).expanduser()
    if suffixes and out.suffix.lower() not in suffixes:
        raise InputError(argument, f"{str(path)!r} needs an image extension such as .png")
    if out.is_dir():
        raise InputError(argument, f"{str(path)!r} is a folder; give a file name such as {str(out / 'edit.png')!r}")
    if not out.parent.exists():
        raise InputError(argument, f"folder {str(out.parent)!r} does not exist; create it first")
    if not out.parent.is_dir():
        raise InputError(argument, f"{str(out.parent)!r} is a file, not a folder; give a path inside a folder")
    _probe(out.parent, argument)
    if out.exists() and not os.access(out, os.W_OK):
        raise InputError(argument, f"{str(out)!r} exists and cannot be overwritten (read-only); give another name")
    return out


def remove(path: Path) -> None:
    """Delete a file or a folder tree, whichever ``path`` is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_temporaries(folder: Path) -> None:
    """Delete what an interrupted :func:`write_atomic` left in ``folder``."""
    if folder.is_dir():
        for leftover in folder.glob(f".*{TEMP_MARK}*"):
            remove(leftover)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a file or folder at a temporary name, then rename it to ``path`` (replacing it): a reader
    never sees a half-written ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        if path.is_dir():  # a folder cannot be replaced by a rename: move the old one away first
            old = path.with_name(f".{path.name}{TEMP_MARK}old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            remove(old)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            remove(tmp)


def open_cache(cache_dir: str | Path, argument: str = "cache_dir") -> Path:
    """Create ``cache_dir`` if needed, check it can be written, and remove leftover temporaries (of the LoRA and
    inversion entries :mod:`dragnb.cache` writes there)."""
    root = writable_folder(cache_dir, argument)
    for stage in ("lora", "inversion"):
        remove_temporaries(root / stage)
    return root
