"""Trial lists (VoxCeleb's ``veri_test2.txt``): one type, one reader, one writer, one generator.

One trial a line, ``label enrol test``, label 1 (same speaker) or 0, paths relative to
the audio root, fields separated by whitespace. A path with whitespace, quotes or
backslashes is written in shell quotes (``1 'spk/zoom in_01.wav' spk/b.wav``); a line
without quotes reads exactly as in VoxCeleb. The reader checks the whole list at once
(UTF-8, with or without a byte-order mark; fields; labels; enrol == test; paths that
leave the audio root; missing files) and reports every bad line with its number before
any long work starts; duplicate trials are counted and logged.
"""

import itertools
import logging
import os
import random
import shlex
from collections import defaultdict, namedtuple

logger = logging.getLogger(__name__)

Trial = namedtuple("Trial", ["label", "enrol", "test", "line"], defaults=(None,))
Trial.__doc__ = "One trial: label (0/1), enrol and test paths, the 1-based line number."
MAX_TRIAL_ERRORS = 10
QUOTES = ("'", '"')
NEEDS_QUOTES = (*QUOTES, "\\")


def quote_path(path):
    """``path`` as a trial-list field: unchanged unless it holds whitespace, quotes or
    backslashes, which :func:`split_trial_line` would otherwise misread.

    Example
    -------
    >>> quote_path("id10270/5r0dWxy17C8/00001.wav")
    'id10270/5r0dWxy17C8/00001.wav'
    >>> print(quote_path("spk/zoom in_01.wav"))
    'spk/zoom in_01.wav'
    """
    if any(ch.isspace() for ch in path) or any(ch in path for ch in NEEDS_QUOTES):
        return shlex.quote(path)
    return path


def format_trial_line(trial):
    """One line of a trial list (with its newline), paths quoted where needed.

    Example
    -------
    >>> format_trial_line(Trial(1, "a/x y.wav", "a/2.wav"))
    "1 'a/x y.wav' a/2.wav\\n"
    """
    return f"{trial.label} {quote_path(trial.enrol)} {quote_path(trial.test)}\n"


def split_trial_line(line):
    """The fields of a trial-list line: whitespace-separated, shell quoting if it has quotes.

    Example
    -------
    >>> split_trial_line("1 id1/a.wav id1/b.wav")
    ['1', 'id1/a.wav', 'id1/b.wav']
    >>> split_trial_line("1 'spk/zoom in_01.wav' spk/b.wav")
    ['1', 'spk/zoom in_01.wav', 'spk/b.wav']
    """
    if not any(quote in line for quote in QUOTES):
        return line.split()
    return shlex.split(line, comments=False, posix=True)


def outside_root(rel):
    """Why ``rel`` would leave the audio root (absolute, or ``..`` above it), or None.

    Example
    -------
    >>> outside_root("id1/a.wav"), outside_root("id1/../id2/a.wav")
    (None, None)
    >>> outside_root("../../etc/passwd")
    'leaves the audio root (..)'
    """
    if os.path.isabs(rel) or rel.startswith("~"):
        return "is absolute (must be relative to the audio root)"
    if os.path.normpath(rel).split(os.sep)[0] == os.pardir:
        return "leaves the audio root (..)"
    return None


OUTSIDE_HINT = "allow it with allow_outside_root"


class TrialListError(ValueError):
    """A trial list with malformed lines, unknown labels or missing files."""


def read_trial_list(path, resolve=None, where=None, allow_outside_root=False,
                    require_labels=True, outside_hint=OUTSIDE_HINT):
    """Reads and validates a trial list (``label enrol test`` per line).

    With ``require_labels=False`` a list may instead be all ``enrol test`` lines (no
    labels: the trials' ``label`` is None, for scoring only); a list mixing both is refused.

    Arguments
    ---------
    path : str
        The list (e.g. ``veri_test2.txt``), UTF-8 (a byte-order mark is accepted).
        Blank lines are ignored; paths with spaces are quoted (:func:`quote_path`).
    resolve : callable
        ``resolve(relative_path)`` is true when the file exists; None skips the check.
    where : str
        Where the relative paths were looked up, for the error message.
    allow_outside_root : bool
        Accept absolute paths and paths with ``..`` above the audio root (refused by
        default: a list from elsewhere must not read files outside the corpus).
    outside_hint : str
        The remedy the error gives for such paths, in the caller's terms (the command
        line names its own option).

    Returns
    -------
    list of Trial

    Raises
    ------
    TrialListError
        One error for the whole file, listing the first offending lines (bytes that are
        not UTF-8, wrong number of fields, label not 0/1, enrol == test, paths outside
        the root, missing files) with their line numbers. Duplicate trials (the same pair
        in either order) are kept and logged with their count.

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "trials.txt")
    >>> _ = open(path, "w").write("1 a/1.wav a/2.wav\\n0 a/1.wav b/1.wav\\n")
    >>> read_trial_list(path)[1]
    Trial(label=0, enrol='a/1.wav', test='b/1.wav', line=2)
    >>> _ = open(path, "w").write("1 a/1.wav a/2.wav\\n2 a/1.wav b/1.wav\\nx\\n1 a/1.wav a/1.wav\\n")
    >>> read_trial_list(path)
    Traceback (most recent call last):
    ...
    fefa_speechbrain.data.trials.TrialListError: trial list ...trials.txt: 3 problems (first 10 shown):
      line 2: label must be 0 or 1, found '2'
      line 3: expected 3 fields 'label enrol test', found 1: 'x'
      line 4: enrol and test are the same file: a/1.wav
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"trial list {path} does not exist")
    trials, problems, paths = [], [], {}
    suffix = f" (looked under {where})" if where else ""
    try:
        with open(path, "rb") as handle:
            raw_lines = handle.read().splitlines()
    except OSError as error:
        raise TrialListError(f"trial list {path} cannot be read: {error.strerror or error}") from error
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(
                f"line {number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column "
                f"{error.start + 1}); save the list as UTF-8"
            )
            continue
        if number == 1:
            line = line.removeprefix("\ufeff")
        try:
            fields = split_trial_line(line)
        except ValueError as error:
            problems.append(f"line {number}: {error} in {line.strip()!r}")
            continue
        if not fields:
            continue
        if len(fields) == 2 and not require_labels:
            fields = [None] + fields
        if len(fields) != 3:
            hint = " (a path with spaces must be quoted: 'a b.wav')" if len(fields) > 3 else ""
            expected = "3 fields 'label enrol test'" + (
                "" if require_labels else " or 2 fields 'enrol test'")
            problems.append(
                f"line {number}: expected {expected}, found {len(fields)}: {line.strip()!r}{hint}"
            )
            continue
        label, enrol, test = fields
        line_problems = []
        if label is not None and label not in ("0", "1"):
            line_problems.append(f"line {number}: label must be 0 or 1, found {label!r}")
        if os.path.normpath(enrol) == os.path.normpath(test):
            line_problems.append(f"line {number}: enrol and test are the same file: {enrol}")
        for rel in dict.fromkeys((enrol, test)):
            escape = None if allow_outside_root else outside_root(rel)
            if escape is not None:
                line_problems.append(f"line {number}: {rel} {escape}; {outside_hint}")
            elif resolve is not None and not resolve(rel):
                line_problems.append(f"line {number}: file not found: {rel}{suffix}")
        problems.extend(line_problems)
        if not line_problems:  # one string per distinct path, however many trials use it
            enrol, test = paths.setdefault(enrol, enrol), paths.setdefault(test, test)
            trials.append(Trial(None if label is None else int(label), enrol, test, number))
    if len({trial.label is None for trial in trials}) > 1:
        problems.append("some lines have a label and others do not: label every line or none")
    if problems:
        shown = "\n  ".join(problems[:MAX_TRIAL_ERRORS])
        raise TrialListError(
            f"trial list {path}: {len(problems)} problem{'s' if len(problems) > 1 else ''} "
            f"(first {MAX_TRIAL_ERRORS} shown):\n  {shown}"
        )
    if not trials:
        raise TrialListError(f"trial list {path} contains no trials")
    _log_duplicates(path, trials)
    return trials


def duplicate_trials(trials):
    """``[(line, first line)]`` of trials that repeat an earlier pair (in either order).

    Example
    -------
    >>> duplicate_trials([Trial(1, "a", "b", 1), Trial(1, "b", "a", 2), Trial(0, "a", "c", 3)])
    [(2, 1)]
    """
    first, repeats = {}, []
    for trial in trials:
        key = frozenset((trial.enrol, trial.test))
        if key in first:
            repeats.append((trial.line, first[key]))
        else:
            first[key] = trial.line
    return repeats


def _log_duplicates(path, trials):
    repeats = duplicate_trials(trials)
    if repeats:
        shown = ", ".join(f"line {line} repeats line {earlier}" for line, earlier in repeats[:5])
        logger.warning(
            "trial list %s: %d duplicate trials (kept, each counts in the EER): %s%s",
            path, len(repeats), shown, " ..." if len(repeats) > 5 else "",
        )


def generate_trials(utterances, n_trials=None, seed=1234):
    """A balanced, seeded trial list over the given utterances.

    Every target pair (same speaker; a random ``n_trials // 2`` of them when
    ``n_trials`` is smaller) and as many distinct random non-target pairs (all of them
    when there are fewer). Pairs are unordered: the file first in path order enrols.

    Arguments
    ---------
    utterances : list
        The test utterances: anything with ``speaker`` and ``rel`` (relative path).
    n_trials : int or None
        Cap on the number of trials.
    seed : int
        Seed of the random choices.

    Returns
    -------
    list of Trial
        Sorted by enrol and test path; ``line`` numbers their order in ``trials.txt``.

    Example
    -------
    >>> Utt = namedtuple("Utt", ["speaker", "rel"])
    >>> utts = [Utt(s, f"{s}/{u}.wav") for s in "ab" for u in "12"]
    >>> for t in generate_trials(utts):
    ...     print(t.label, t.enrol, t.test)
    1 a/1.wav a/2.wav
    0 a/1.wav b/2.wav
    0 a/2.wav b/2.wav
    1 b/1.wav b/2.wav
    """
    rng = random.Random(f"{seed}:trials")
    utterances = sorted(utterances, key=lambda u: u.rel)
    speakers = [u.speaker for u in utterances]
    targets = [
        (i, j)
        for i, j in itertools.combinations(range(len(utterances)), 2)
        if speakers[i] == speakers[j]
    ]
    if n_trials is not None and len(targets) > n_trials // 2:
        targets = rng.sample(targets, n_trials // 2)
    nontargets = _sample_nontargets(speakers, len(targets), rng)
    pairs = sorted(
        [(1, i, j) for i, j in targets] + [(0, i, j) for i, j in nontargets],
        key=lambda p: (utterances[p[1]].rel, utterances[p[2]].rel),
    )
    return [
        Trial(label, utterances[i].rel, utterances[j].rel, number)
        for number, (label, i, j) in enumerate(pairs, start=1)
    ]


def _sample_nontargets(speakers, count, rng):
    """``count`` distinct pairs (i < j) of different speakers (all when fewer exist)."""
    n = len(speakers)
    sizes = defaultdict(int)
    for speaker in speakers:
        sizes[speaker] += 1
    available = n * (n - 1) // 2 - sum(k * (k - 1) // 2 for k in sizes.values())
    if count >= available or available <= 4 * count:
        every = [
            (i, j) for i, j in itertools.combinations(range(n), 2) if speakers[i] != speakers[j]
        ]
        return every if count >= available else rng.sample(every, count)
    chosen = set()
    while len(chosen) < count:
        i, j = rng.randrange(n), rng.randrange(n)
        if speakers[i] != speakers[j]:
            chosen.add((min(i, j), max(i, j)))
    return sorted(chosen)


def read_trials(path, audio_root=None, check_files=True, allow_outside_root=False,
                require_labels=True, outside_hint=OUTSIDE_HINT):
    """A trial list with absolute paths under ``audio_root`` (default: the list's folder).

    Paths that leave ``audio_root`` (absolute, or ``..`` above it) are refused unless
    ``allow_outside_root``.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> for name in ("a.wav", "b.wav"):
    ...     _ = (tmp / name).write("")
    >>> _ = (tmp / "trials.txt").write("1 a.wav b.wav\\n0 b.wav a.wav\\n")
    >>> [t.label for t in read_trials(str(tmp / "trials.txt"))]
    [1, 0]
    >>> _ = (tmp / "trials.txt").write("1 a.wav ../../etc/passwd\\n")
    >>> read_trials(str(tmp / "trials.txt"))
    Traceback (most recent call last):
    ...
    fefa_speechbrain.data.trials.TrialListError: trial list ...: 1 problem (first 10 shown):
      line 1: ../../etc/passwd leaves the audio root (..); allow it with allow_outside_root
    """
    if not os.path.isfile(path):
        raise TrialListError(f"trial list {path} does not exist")
    root = audio_root if audio_root is not None else os.path.dirname(os.path.abspath(path))
    resolve = (lambda rel: os.path.isfile(os.path.join(root, rel))) if check_files else None
    trials = read_trial_list(path, resolve=resolve, where=root,
                             allow_outside_root=allow_outside_root, require_labels=require_labels,
                             outside_hint=outside_hint)
    absolute = {rel: os.path.join(root, rel) for rel in trial_files(trials)}
    return [trial._replace(enrol=absolute[trial.enrol], test=absolute[trial.test]) for trial in trials]


def trial_files(trials):
    """Every file of the trial list, once, sorted."""
    return sorted({path for trial in trials for path in (trial.enrol, trial.test)})
