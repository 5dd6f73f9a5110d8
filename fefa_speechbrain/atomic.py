"""Atomic file writing shared by the package.

Every file the package produces (CSV manifests, reports, options, exported models'
metadata, results) is written through these helpers: the content goes to a temporary
file in the destination's directory, is flushed and ``fsync``-ed, then renamed over the
destination with :func:`os.replace`, which is atomic on POSIX and Windows. A reader
therefore sees either the old complete file or the new complete file, never a partial
one, and a run interrupted while writing leaves the destination untouched (the temporary
file is removed when the write fails with an exception).

Missing parent directories are created. New files get the usual permissions
(``0o666`` minus the process umask), like :func:`open` would give them.
"""

import contextlib
import csv
import json
import os
import secrets


def _temporary_name(path):
    """A fresh hidden name beside ``path`` for the temporary file."""
    folder, name = os.path.split(os.path.abspath(path))
    token = f"{os.getpid()}.{secrets.token_hex(4)}"
    return os.path.join(folder, f".{name}.{token}.tmp")


def fsync_path(path):
    """Flushes a file or folder to disk (a folder: the renames in it); a no-op where the
    system cannot open or flush it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode="w", encoding="utf-8", newline=None):
    """Opens a temporary file that replaces ``path`` when the block succeeds.

    Arguments
    ---------
    path : str or os.PathLike
        Destination file.
    mode : str
        ``"w"`` (text) or ``"wb"`` (binary). Only writing modes make sense here.
    encoding : str
        Text encoding (ignored in binary mode).
    newline : str or None
        As for :func:`open` (pass ``""`` for the :mod:`csv` module).

    Yields
    ------
    file object
        Write to it; on normal exit it is flushed, fsync-ed and renamed to ``path``.
        On an exception the temporary file is deleted and ``path`` is left as it was.

    Example
    -------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> target = os.path.join(folder, "a.txt")
    >>> with atomic_open(target) as f:
    ...     _ = f.write("complete")
    >>> open(target).read()
    'complete'
    >>> try:
    ...     with atomic_open(target) as f:
    ...         _ = f.write("half")
    ...         raise RuntimeError("interrupted")
    ... except RuntimeError:
    ...     pass
    >>> open(target).read(), sorted(os.listdir(folder))
    ('complete', ['a.txt'])
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r} for {path}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = _temporary_name(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if mode == "wb":
            handle = os.fdopen(fd, mode)
        else:
            handle = os.fdopen(fd, mode, encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        os.remove(temporary)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        _raise_naming(error, path)
        raise
    fsync_path(folder)


def _raise_naming(error, path):
    """Re-raises a disk or encoding error that does not name the file, naming it."""
    if isinstance(error, OSError) and error.errno is not None and not error.filename:
        raise type(error)(error.errno, f"{error.strerror} (writing {path})", path) from error
    if isinstance(error, UnicodeEncodeError):
        bad = error.object[error.start:error.end]
        raise ValueError(
            f"{path}: cannot write {bad!r} as {error.encoding} (a file name that is not "
            "valid text, e.g. from a non-UTF-8 file system; rename the file)"
        ) from error


def check_writable_folder(folder):
    """Proves that files can be written in ``folder``, leaving no trace.

    Missing folders are created for the test and removed again, so a command that
    fails later has not left an empty output folder behind.

    Raises
    ------
    OSError
        Naming the folder and the reason, before any long work.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> check_writable_folder(str(tmp / "out" / "sub"))
    >>> os.path.exists(tmp / "out")
    False
    >>> _ = (tmp / "a_file").write("")
    >>> check_writable_folder(str(tmp / "a_file" / "out"))
    Traceback (most recent call last):
    ...
    NotADirectoryError: [Errno 20] output folder .../a_file/out cannot be written: Not a directory
    """
    folder = os.path.abspath(os.fspath(folder))
    missing = []
    parent = folder
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        missing.append(parent)
        parent = os.path.dirname(parent)
    probe = os.path.join(folder, f".write-test-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.makedirs(folder, exist_ok=True)
        with atomic_open(probe) as handle:
            handle.write("")
        os.remove(probe)
    except OSError as error:
        raise type(error)(
            error.errno, f"output folder {folder} cannot be written: {error.strerror}"
        ) from error
    finally:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(created)


def atomic_write_text(path, text, encoding="utf-8"):
    """Writes ``text`` to ``path`` atomically.

    Example
    -------
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "sub", "note.txt")
    >>> atomic_write_text(target, "hello\\n")
    >>> open(target).read()
    'hello\\n'
    """
    with atomic_open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)


def atomic_write_json(path, obj, indent=2):
    """Writes ``obj`` as JSON (UTF-8, trailing newline) to ``path`` atomically.

    Example
    -------
    >>> import json, os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "r.json")
    >>> atomic_write_json(target, {"eer": 2.85, "ok": True})
    >>> json.load(open(target))
    {'eer': 2.85, 'ok': True}
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_write_csv(path, rows, fieldnames):
    """Writes a CSV file with a header row atomically.

    Arguments
    ---------
    path : str or os.PathLike
        Destination file.
    rows : iterable
        Each row is either a mapping with exactly the keys in ``fieldnames`` or a
        sequence of values in the order of ``fieldnames``.
    fieldnames : sequence of str
        The header.

    Example
    -------
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> atomic_write_csv(target, [["a", 1], {"ID": "b", "n": 2}], ["ID", "n"])
    >>> open(target, newline="").read()
    'ID,n\\r\\na,1\\r\\nb,2\\r\\n'
    """
    fieldnames = list(fieldnames)
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fieldnames)
        for number, row in enumerate(rows, start=1):
            writer.writerow(_row_values(row, fieldnames, path, number))


def _row_values(row, fieldnames, path, number):
    """Orders one row's values by ``fieldnames``; checks its size or keys."""
    if isinstance(row, dict):
        if set(row) != set(fieldnames):
            raise ValueError(
                f"{path}: row {number} has keys {sorted(row)}, expected {fieldnames}"
            )
        return [row[name] for name in fieldnames]
    row = list(row)
    if len(row) != len(fieldnames):
        raise ValueError(
            f"{path}: row {number} has {len(row)} values, expected {len(fieldnames)} "
            f"({', '.join(fieldnames)})"
        )
    return row
