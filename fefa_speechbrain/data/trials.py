"""Trial lists (VoxCeleb's ``veri_test2.txt``): one type, one reader, one generator.

One trial a line, ``label enrol test``, label 1 (same speaker) or 0, paths relative to
the audio root. The reader checks the whole list at once and reports every bad line
with its number, before any long work starts.
"""

import itertools
import os
import random
from collections import defaultdict, namedtuple

Trial = namedtuple("Trial", ["label", "enrol", "test", "line"], defaults=(None,))
Trial.__doc__ = "One trial: label (0/1), enrol and test paths, the 1-based line number."
MAX_TRIAL_ERRORS = 10


class TrialListError(ValueError):
    """A trial list with malformed lines, unknown labels or missing files."""


def read_trial_list(path, resolve=None, where=None):
    """Reads and validates a trial list (``label enrol test`` per line).

    Arguments
    ---------
    path : str
        The list (e.g. ``veri_test2.txt``). Blank lines are ignored.
    resolve : callable
        ``resolve(relative_path)`` is true when the file exists; None skips the check.
    where : str
        Where the relative paths were looked up, for the error message.

    Returns
    -------
    list of Trial

    Raises
    ------
    TrialListError
        One error for the whole file, listing the first offending lines (wrong number
        of fields, label not 0/1, missing files) with their line numbers.

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "trials.txt")
    >>> _ = open(path, "w").write("1 a/1.wav a/2.wav\\n0 a/1.wav b/1.wav\\n")
    >>> read_trial_list(path)[1]
    Trial(label=0, enrol='a/1.wav', test='b/1.wav', line=2)
    >>> _ = open(path, "w").write("1 a/1.wav a/2.wav\\n2 a/1.wav b/1.wav\\nx\\n")
    >>> read_trial_list(path)
    Traceback (most recent call last):
    ...
    fefa_speechbrain.data.trials.TrialListError: trial list ...trials.txt: 2 problems (first 10 shown):
      line 2: label must be 0 or 1, found '2'
      line 3: expected 3 fields 'label enrol test', found 1: 'x'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"trial list {path} does not exist")
    trials, problems = [], []
    suffix = f" (looked under {where})" if where else ""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                problems.append(
                    f"line {number}: expected 3 fields 'label enrol test', "
                    f"found {len(fields)}: {line.strip()!r}"
                )
                continue
            label, enrol, test = fields
            line_problems = []
            if label not in ("0", "1"):
                line_problems.append(f"line {number}: label must be 0 or 1, found {label!r}")
            for rel in (enrol, test):
                if resolve is not None and not resolve(rel):
                    line_problems.append(f"line {number}: file not found: {rel}{suffix}")
            problems.extend(line_problems)
            if not line_problems:
                trials.append(Trial(int(label), enrol, test, number))
    if problems:
        shown = "\n  ".join(problems[:MAX_TRIAL_ERRORS])
        raise TrialListError(
            f"trial list {path}: {len(problems)} problem{'s' if len(problems) > 1 else ''} "
            f"(first {MAX_TRIAL_ERRORS} shown):\n  {shown}"
        )
    if not trials:
        raise TrialListError(f"trial list {path} contains no trials")
    return trials


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


def read_trials(path, audio_root=None, check_files=True):
    """A trial list with absolute paths under ``audio_root`` (default: the list's folder).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> for name in ("a.wav", "b.wav"):
    ...     _ = (tmp / name).write("")
    >>> _ = (tmp / "trials.txt").write("1 a.wav b.wav\\n0 b.wav a.wav\\n")
    >>> [t.label for t in read_trials(str(tmp / "trials.txt"))]
    [1, 0]
    """
    if not os.path.isfile(path):
        raise TrialListError(f"trial list {path} does not exist")
    root = audio_root if audio_root is not None else os.path.dirname(os.path.abspath(path))
    resolve = (lambda rel: os.path.isfile(os.path.join(root, rel))) if check_files else None
    return [
        trial._replace(enrol=os.path.join(root, trial.enrol), test=os.path.join(root, trial.test))
        for trial in read_trial_list(path, resolve=resolve, where=root)
    ]


def trial_files(trials):
    """Every file of the trial list, once, sorted."""
    return sorted({path for trial in trials for path in (trial.enrol, trial.test)})
