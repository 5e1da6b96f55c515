"""Atomic file writing: nothing a command has already written is lost or left half-written.

Every writer goes to a temporary file in the destination folder and is renamed into place
only when complete (rename is atomic on POSIX within a filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The temporary files and folders below are created 0600/0700 (mkstemp/mkdtemp); what is renamed
# into place gets the permissions any file of the user would (0666/0777 minus the umask), so
# colleagues and Ray workers with another user id can read bundles and datasets on shared storage.
UMASK = _umask()


def _tmp_prefix(dest: Path) -> str:
    """'.<name>.' for the temporary sibling, cut so that it plus mkstemp's 8 random characters and
    '.tmp' stay under the 255 bytes a file name may have (a legal 250-character name failed on it)."""
    name = dest.name
    while len(f".{name}.".encode()) > 200:
        name = name[:-1]
    return f".{name}."


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(dest), suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~UMASK)
        os.replace(tmp_path, dest)
    except OSError as e:  # a write's ENOSPC/EFBIG names no file: this is the one that did not fit
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(dest)) from e
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_png(dest: str | os.PathLike, array) -> None:
    """Write a uint8 HxW or HxWx3 array as PNG, atomically. PNG bytes are deterministic."""
    from PIL import Image

    with atomic_path(dest) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", optimize=False)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole folder in a temporary sibling and move it into place when complete.

    An existing `dest` is refused unless `overwrite` (then it is replaced only after the new
    one is complete, so a failure leaves the old folder as it was).
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        from .errors import CytorayError

        raise CytorayError(
            f"{dest}: output folder exists and is not empty; "
            "choose another --out or pass --overwrite"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest), suffix=".tmp", dir=dest.parent))
    try:
        try:
            yield tmp
        except OSError as e:  # a write's ENOSPC/EFBIG names no file, or the temporary twin of one: name it under dest
            name = None if e.filename is None else Path(os.fsdecode(e.filename))
            if e.errno is not None and (name is None or name.is_relative_to(tmp)):
                raise OSError(
                    e.errno, e.strerror, str(dest if name is None else dest / name.relative_to(tmp))
                ) from e
            raise
        os.chmod(tmp, 0o777 & ~UMASK)
        if dest.exists():
            old = tmp.with_name(tmp.name[: -len(".tmp")] + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict order (cache keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def safe_component(name: str, what: str) -> str:
    """`name` if it is one plain path component (no separator, not '.' or '..', no NUL): names that
    come from metadata (a bundle's class names) must never reach outside the folder they go into."""
    from .errors import CytorayError

    ok = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in ("/", "\\", "\x00"))
    )
    if not ok:
        raise CytorayError(
            f"{what} {name!r} is not a plain folder name; "
            "refusing to write outside the output folder"
        )
    return name


def os_error_message(e: OSError) -> str:
    """One line for an OSError on a user's path (read-only --out, a file where a folder goes, an
    unreadable input, a full disk). It cannot tell an input from an output, so it says both."""
    import errno

    where = e.filename if e.filename is not None else "a file being written"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}: no space left on the device (or over quota); free space or choose an --out on another disk"
    if e.errno == errno.EFBIG:
        return (
            f"{where}: file too large (over the file system's or this process's file-size "
            "limit, `ulimit -f`); raise the limit or choose an --out on another disk"
        )
    if e.errno == errno.ENAMETOOLONG:
        return f"{where}: a file name is too long for the file system; choose a shorter name"
    return f"{where}: {e.strerror or e}; check the path and its permissions (inputs must be readable, --out writable)"


FULL_DISK_ERRNOS = (28, 122, 27)  # ENOSPC, EDQUOT, EFBIG: the user's to fix, whatever file it hit


def full_disk_message(e: BaseException, where: str | None = None) -> str | None:
    """One line for a full disk found anywhere in `e`'s chain (an OSError 28 or 27; sqlite's
    'database or disk is full' under SQLAlchemy and MLflow; a Ray worker's error text), naming
    the file or `where`; None when `e` is something else."""
    seen: set[int] = set()
    stack: list = [e]
    while stack:
        x = stack.pop()
        if not isinstance(x, BaseException) or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in FULL_DISK_ERRNOS:
            return os_error_message(
                x
                if x.filename is not None or where is None
                else OSError(x.errno, x.strerror, where)
            )
        text = str(x)
        if (
            "database or disk is full" in text
            or "No space left on device" in text
            or "Disk quota exceeded" in text
        ):
            return os_error_message(OSError(28, "No space left on device", where))
        # Ray Train's WorkerGroupError: {rank: error}
        failures = getattr(x, "worker_failures", None)
        stack += [
            x.__cause__,
            x.__context__,
            getattr(x, "cause", None),
            *(failures.values() if isinstance(failures, dict) else ()),
        ]
    return None


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # what cytoray reads as an image


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def _image_files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file() and is_image_name(p)]
    except OSError:
        return []


def holds_dataset(folder: str | os.PathLike) -> bool:
    """A folder holds a dataset when it, or a subfolder of it, holds image files (class folders
    of images, or one class folder itself): `--overwrite` never replaces one of those."""
    folder = Path(folder)
    if _image_files(folder):
        return True
    try:
        return any(d.is_dir() and _image_files(d) for d in folder.iterdir())
    except OSError:
        return False


def check_output_folder(
    out: str | os.PathLike,
    *,
    overwrite: bool,
    inputs=(),
    ours=None,
    flag: str = "--out",
    inside_input_ok: bool = False,
) -> Path:
    """Refuse an output folder that would destroy something before anything is computed.

    - an empty path, the current folder or one above it (replacing it would pull the folder
      from under the shell);
    - a folder that is or holds one of the command's `inputs`, or lies inside one (unless
      `inside_input_ok`: a sample folder inside a bundle's folder harms nothing);
    - an existing, non-empty folder unless `overwrite`; with `overwrite`, still refused unless
      `ours(folder)` says it is a previous output of this same command (a dataset someone
      collected is never replaced by synthetic images).
    """
    from .errors import CytorayError

    if not str(out).strip():
        raise CytorayError(f"{flag} '': give the path of a new folder")
    dest = Path(out).expanduser()
    res = dest.resolve()
    cwd = Path.cwd().resolve()
    if res == cwd or res in cwd.parents:
        raise CytorayError(
            f"{flag} {out}: is the current folder (or holds it); give a new subfolder instead"
        )
    for i in inputs:
        ir = Path(i).expanduser().resolve()
        if res == ir or res in ir.parents or (ir in res.parents and not inside_input_ok):
            raise CytorayError(
                f"{flag} {out}: overlaps the command's input {i}; choose a folder outside it"
            )
    try:
        busy = res.is_dir() and any(res.iterdir())
    except OSError:
        busy = False
    if busy and not overwrite:
        raise CytorayError(
            f"{out}: output folder exists and is not empty; "
            f"choose another {flag} or pass --overwrite"
        )
    if busy and not (ours is not None and ours(res)):
        raise CytorayError(
            f"{out}: holds files this command did not write (a dataset or other work); --overwrite "
            f"only replaces a previous output of the same command; choose another {flag}"
        )
    return dest


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse, before allocating, what needs more than half of the memory available now: numpy
    would fail with a MemoryError traceback after minutes of swapping, or the kernel kill the process."""
    from .errors import CytorayError

    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > avail / 2:
        raise CytorayError(
            f"{what} needs about {nbytes / 2**30:.1f} GiB of "
            f"memory, and {avail / 2**30:.1f} GiB is free; {fix}"
        )
