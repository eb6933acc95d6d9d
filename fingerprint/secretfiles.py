"""Files that hold secrets (fingerprint keys, the investigator's signing key) and small files that
must never be half-written (public keys, evidence manifests).

Reading a secret file checks who else can use it:

* readable by group or others (``mode & 0o044``): a :class:`~fingerprint.errors.InsecureFileWarning`
  (the secret may already be known to others);
* writable by group or others (``mode & 0o022``): refused with :class:`~fingerprint.errors.KeyFileError`
  unless ``allow_insecure`` (command line: ``--allow-insecure-key``), because anyone who can
  write it can swap the key under the investigator.

The mode is read from the descriptor the bytes are read from (``fstat``), so a file swapped
between the check and the read cannot slip through.

Writing is atomic and never follows a symbolic link: the bytes go to a fresh temporary file
(unpredictable name, created exclusively, mode set before anything is written) in the target's
folder, are flushed to disk, and the temporary file then takes the target's name: with
``os.link`` when the target must not exist (so an existing file, or a planted symlink, is never
replaced), with ``os.rename`` when overwriting (which replaces a symlink itself, never the file
it points to; a symlink already at the target is refused outright).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import warnings
from pathlib import Path

from .errors import InsecureFileWarning, KeyFileError

__all__ = ["read_secret_file", "read_secret_json", "write_file_atomic", "fsync_dir", "INSECURE_FLAG"]

#: The command-line flag that lets a group/world-writable secret file load (named in errors).
INSECURE_FLAG = "--allow-insecure-key"


def read_secret_file(path: str | os.PathLike[str], *, what: str = "key file", allow_insecure: bool = False) -> bytes:
    """The bytes of a secret file, after checking its permissions (see the module docstring).

    Raises :class:`~fingerprint.errors.KeyFileError` naming the file when it cannot be read or is
    writable by others (unless ``allow_insecure``); warns when it is readable by others."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read {what}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: {what} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            msg = (f"{path}: {what} is writable by {_who(mode, 0o020, 0o002)} (mode {mode:04o}): anyone who can "
                   f"write it can replace the key; run `chmod 600 {path}`")
            if not allow_insecure:
                raise KeyFileError(f"{msg}, or pass {INSECURE_FLAG} to use it anyway")
            warnings.warn(f"{msg} (used anyway: {INSECURE_FLAG})", InsecureFileWarning, stacklevel=3)
        elif mode & 0o044:
            warnings.warn(f"{path}: {what} is readable by {_who(mode, 0o040, 0o004)} (mode {mode:04o}): the "
                          f"secret may be known to others; run `chmod 600 {path}`", InsecureFileWarning,
                          stacklevel=3)
        try:
            return fh.read()
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read {what}: {exc.strerror}") from None


def _who(mode: int, group_bit: int, other_bit: int) -> str:
    return " and ".join(w for w, bit in (("its group", group_bit), ("everyone", other_bit)) if mode & bit)


def write_file_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, overwrite: bool = False,
                      what: str = "key file", error: type[Exception] = KeyFileError) -> Path:
    """Write ``data`` to ``path`` atomically with file mode ``mode``, never following a symlink.

    Without ``overwrite`` an existing ``path`` (a file, a directory or a symlink, even a dangling
    one) is refused; with it, a symlink or a directory at ``path`` is still refused. Raises
    ``error`` (default :class:`~fingerprint.errors.KeyFileError`) naming the file."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if os.path.islink(path):
        raise error(f"{path}: is a symbolic link; refusing to write a {what} through or over it "
                    f"(remove the link or choose another path)")
    if path.is_dir():
        raise error(f"{path}: is a directory")
    if not overwrite and os.path.lexists(path):
        raise error(f"{path}: already exists; refusing to overwrite a {what} (pass --force)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise error(f"{path}: cannot write {what}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            if os.path.islink(path):  # planted since the check above: still never written through
                raise error(f"{path}: is a symbolic link; refusing to write a {what} through or over it")
            os.replace(tmp, path)  # rename(2) replaces a link itself, never its target
        else:
            try:
                os.link(tmp, path)  # fails if anything (even a dangling symlink) is at path
            except FileExistsError:
                raise error(f"{path}: already exists; refusing to overwrite a {what} (pass --force)") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                    raise
                _write_exclusive(path, data, mode, what, error)  # a file system without hard links
            os.unlink(tmp)
        fsync_dir(parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _write_exclusive(path: Path, data: bytes, mode: int, what: str, error: type[Exception]) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise error(f"{path}: already exists; refusing to overwrite a {what} (pass --force)") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (fsync of the directory; best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_secret_json(path: str | os.PathLike[str], *, what: str, allow_insecure: bool = False) -> object:
    """The parsed JSON of a secret file (:func:`read_secret_file`'s checks first); a
    :class:`~fingerprint.errors.KeyFileError` naming the file, the line and the column otherwise."""
    import json

    raw = read_secret_file(path, what=what, allow_insecure=allow_insecure)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise KeyFileError(f"{path}: JSON nested too deeply") from None
