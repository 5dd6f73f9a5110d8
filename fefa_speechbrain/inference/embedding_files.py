"""The embeddings file that ``fefa-speechbrain embed`` writes, and its reader.

``FILE.npy`` holds the matrix (one float32 row per file) and ``FILE.txt`` the path of
each row, one a line, after one header line that binds the two files together::

    # fefa-speechbrain embeddings: 3 rows of emb.npy, sha256 9f86d08...

The two files are two writes, so a kill or a full disk between them can leave a new
matrix beside an old index (or the reverse), which would label every row with the wrong
file. :func:`write_embeddings` writes the matrix first and the index last, each
atomically; :func:`read_embeddings` checks the header's row count and the SHA-256 of
the ``.npy`` bytes and refuses any pair that does not belong together. A ``FILE.pt`` is a
single file (a dict path -> embedding) and needs no such check.

Paths are written one a line, so a path holding a line break or another control
character would shift the rows: :func:`unwritable_names` finds them, and the command
line refuses them before any embedding.
"""

import hashlib
import os
import re
import unicodedata

import numpy as np

from fefa_speechbrain.atomic import atomic_open, atomic_write_text

HEADER = "# fefa-speechbrain embeddings: {rows} rows of {name}, sha256 {digest}"
HEADER_PATTERN = re.compile(
    r"^# fefa-speechbrain embeddings: (\d+) rows of (.+), sha256 ([0-9a-f]{64})$"
)


class EmbeddingsFileError(ValueError):
    """An embeddings file whose rows and names do not belong together, or cannot be read."""


def index_path(path):
    """The index (``.txt``) beside a ``.npy`` embeddings file.

    Example
    -------
    >>> index_path("out/emb.npy")
    'out/emb.txt'
    """
    path = os.fspath(path)
    return path[: -len(".npy")] + ".txt" if path.endswith(".npy") else path + ".txt"


def unwritable_names(names):
    """The names that cannot be one line of the index: ``[(name, why)]``.

    A control character (line feed, carriage return, tab, ...) or a Unicode line or
    paragraph separator would split the line or shift the rows in common readers; a
    name that is not valid text (bytes of a non-UTF-8 file system) cannot be written.

    Example
    -------
    >>> unwritable_names(["a/1.wav", "a/x\\ny.wav", "a/\\udce9.wav"])  # doctest: +NORMALIZE_WHITESPACE
    [('a/x\\ny.wav', "control character '\\\\n' in the name"),
     ('a/\\udce9.wav', 'not valid UTF-8 text (a file name from a non-UTF-8 file system)')]
    """
    found = []
    for name in names:
        bad = [ch for ch in name if unicodedata.category(ch) in ("Cc", "Zl", "Zp")]
        if bad:
            found.append((name, f"control character {bad[0]!r} in the name"))
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            found.append((name, "not valid UTF-8 text (a file name from a non-UTF-8 file system)"))
    return found


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_embeddings(path, names, matrix):
    """Writes ``FILE.npy`` and its index ``FILE.txt`` so that :func:`read_embeddings`
    can tell whether they belong together.

    The matrix is written first (atomically), then the index (atomically) with the row
    count and the SHA-256 of the ``.npy`` bytes just written. Whatever stops the second
    write leaves an index whose header does not fit the matrix: the reader refuses it.

    Arguments
    ---------
    path : str
        The ``.npy`` file.
    names : list of str
        The path of each row (see :func:`unwritable_names`).
    matrix : numpy.ndarray
        [rows, dim].

    Returns
    -------
    str : the index path.
    """
    path = os.fspath(path)
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != len(names):
        raise ValueError(f"{path}: {len(names)} names for a matrix of shape {matrix.shape}")
    bad = unwritable_names(names)
    if bad:
        raise EmbeddingsFileError(f"{bad[0][0]!r}: {bad[0][1]}; rename the file")
    index = index_path(path)
    with atomic_open(path, "wb") as handle:
        np.save(handle, matrix)
    header = HEADER.format(rows=len(names), name=os.path.basename(path), digest=_sha256(path))
    atomic_write_text(index, header + "\n" + "".join(f"{name}\n" for name in names))
    return index


def read_embeddings(path):
    """The names and the matrix of an embeddings file, checked against each other.

    Arguments
    ---------
    path : str
        ``FILE.npy`` (with ``FILE.txt`` beside it, as :func:`write_embeddings` writes
        them) or ``FILE.pt`` (a dict path -> embedding).

    Returns
    -------
    (names, matrix) : list of str and a float32 numpy array [rows, dim].

    Raises
    ------
    EmbeddingsFileError
        Naming both files, when the index is missing, has no header, or its row count
        or SHA-256 does not match the ``.npy`` (a write that was interrupted or one
        file replaced by another run's): embed again.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = write_embeddings(f"{tmp}/emb.npy", ["a.wav", "b.wav"], np.eye(2, dtype="float32"))
    >>> names, matrix = read_embeddings(f"{tmp}/emb.npy")
    >>> names, matrix.shape
    (['a.wav', 'b.wav'], (2, 2))
    >>> np.save(f"{tmp}/emb.npy", np.zeros((2, 2), dtype="float32"))  # another run's matrix
    >>> read_embeddings(f"{tmp}/emb.npy")
    Traceback (most recent call last):
    ...
    fefa_speechbrain.inference.embedding_files.EmbeddingsFileError: .../emb.npy and .../emb.txt do not belong together: ...
    """
    path = os.fspath(path)
    if path.endswith(".pt"):
        return _read_pt(path)
    if not path.endswith(".npy"):
        raise EmbeddingsFileError(f"{path}: an embeddings file is FILE.npy (with FILE.txt) or FILE.pt")
    index = index_path(path)
    for needed in (path, index):
        if not os.path.isfile(needed):
            raise EmbeddingsFileError(f"{needed} is missing: embed again to write {path} and {index}")
    with open(index, encoding="utf-8", newline="") as handle:
        text = handle.read()
    header, _, body = text.partition("\n")
    names = body.split("\n")
    if names and names[-1] == "":
        names.pop()
    match = HEADER_PATTERN.match(header)
    mismatch = "do not belong together"
    again = "(an interrupted write, or one of them replaced by another run): embed again"
    if match is None:
        raise EmbeddingsFileError(
            f"{index} has no 'fefa-speechbrain embeddings' header line, so it cannot be "
            f"checked against {path}: embed again"
        )
    rows, name, digest = int(match.group(1)), match.group(2), match.group(3)
    if name != os.path.basename(path):
        raise EmbeddingsFileError(f"{index} is the index of {name}, not of {path}")
    if len(names) != rows:
        raise EmbeddingsFileError(
            f"{index} declares {rows} rows but names {len(names)} files: {mismatch} {again}"
        )
    if _sha256(path) != digest:
        raise EmbeddingsFileError(
            f"{path} and {index} {mismatch}: the matrix is not the one the index was "
            f"written for (SHA-256 differs) {again}"
        )
    matrix = np.load(path, allow_pickle=False)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise EmbeddingsFileError(f"{path} holds a matrix of shape {matrix.shape}, not {rows} rows")
    return names, matrix


def _read_pt(path):
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise EmbeddingsFileError(f"{path} cannot be read as an embeddings file: {error}") from error
    if not isinstance(saved, dict) or not saved:
        raise EmbeddingsFileError(f"{path} holds no dict path -> embedding")
    names = list(saved)
    return names, torch.stack([saved[name].reshape(-1) for name in names]).numpy()
