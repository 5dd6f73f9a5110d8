"""Helpers shared by the benchmarks: the speech-commands protocol, the machine, outputs.

The fixed protocol of ``../shared/data/speech_commands_v002_test`` (its README):

- test speakers: ids whose first hex digit is 0, 1, 2 or 3 with at least 5 clips;
- training speakers: every speaker outside that range (first hex digit 4-f) with at
  least 2 clips: 184 of them. Speakers of the range with fewer than 5 clips are used
  nowhere (reading "all other speakers" as the complement of the range gives the
  issue's 184; reading it as "all but the 40" would give 190);
- trials: every target pair among the test clips plus as many seeded random
  non-target pairs (what :func:`fefa_speechbrain.data.prepare.prepare_folder_corpus`
  generates from a list of test speakers).

Every output file is written atomically through :mod:`fefa_speechbrain.atomic`.
"""

import datetime
import os
import platform
import resource
import statistics
import sys
import time

from scipy import stats

from fefa_speechbrain.atomic import atomic_write_json, atomic_write_text

TEST_FIRST_DIGITS = "0123"
MIN_TEST_CLIPS = 5
MIN_TRAIN_CLIPS = 2
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def clips_per_speaker(data_folder, extensions=AUDIO_EXTENSIONS):
    """Number of audio files in each ``<data_folder>/<speaker>/`` folder.

    Example
    -------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> for spk, n in (("0a", 2), ("f1", 1)):
    ...     os.makedirs(os.path.join(root, spk))
    ...     for i in range(n):
    ...         _ = open(os.path.join(root, spk, f"{i}.flac"), "w").write("")
    >>> clips_per_speaker(root)
    {'0a': 2, 'f1': 1}
    """
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"data folder {data_folder} does not exist")
    counts = {}
    for speaker in sorted(os.listdir(data_folder)):
        folder = os.path.join(data_folder, speaker)
        if os.path.isdir(folder):
            counts[speaker] = sum(
                name.lower().endswith(extensions) for name in os.listdir(folder)
            )
    if not counts:
        raise FileNotFoundError(f"no speaker folders in {data_folder}")
    return counts


def held_out_speakers(counts):
    """The speakers of the test range (first hex digit 0-3), whatever their clip count.

    They never train: those with at least 5 clips are the test speakers, the others are
    left out altogether (the protocol's "all other speakers" are those outside the range).

    Example
    -------
    >>> held_out_speakers({"0a": 5, "1b": 4, "4d": 2})
    ['0a', '1b']
    """
    return sorted(spk for spk in counts if spk[:1].lower() in TEST_FIRST_DIGITS)


def split_speakers(counts):
    """(test, train) speaker lists of the fixed protocol, from clips per speaker.

    Example
    -------
    >>> split_speakers({"0a": 5, "1b": 4, "3c": 1, "4d": 2, "fe": 1, "2f": 9})
    (['0a', '2f'], ['4d'])
    """
    held_out = held_out_speakers(counts)
    test = [spk for spk in held_out if counts[spk] >= MIN_TEST_CLIPS]
    train = sorted(spk for spk, n in counts.items() if spk not in held_out and n >= MIN_TRAIN_CLIPS)
    return test, train


def write_speaker_list(path, speakers, header=None):
    """Writes one speaker id per line (``#`` header lines first), atomically.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "spk.txt")
    >>> write_speaker_list(path, ["0a", "2f"], header="test speakers")
    >>> open(path).read()
    '# test speakers\\n0a\\n2f\\n'
    """
    lines = [f"# {line}" for line in (header or "").splitlines()] + list(speakers)
    atomic_write_text(path, "\n".join(lines) + "\n")


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib():
    """Total physical memory in GiB (None where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average():
    """The 1, 5 and 15 minute load averages (None where unavailable)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _busy_cpu_seconds():
    """CPU seconds all processes of the machine spent busy so far (/proc/stat)."""
    with open("/proc/stat", encoding="utf-8") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    """CPU seconds of this process and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class OtherCpuShare:
    """Measures how much of the machine's CPU other processes used during a block.

    ``share`` is (busy CPU time of the machine - CPU time of this process and of the
    children it waited for) / (wall time x CPU count): 0 on a quiet machine. A timing
    taken with a share above a few percent was disturbed. Child processes must be
    waited for inside the block (their time is counted once they are reaped). On a
    machine without /proc, ``share`` is None.

    Example
    -------
    >>> with OtherCpuShare() as other:
    ...     _ = sum(range(1000))
    >>> other.share is None or 0.0 <= other.share <= 1.0
    True
    """

    def __init__(self):
        self.share = None
        self._start = None

    def __enter__(self):
        try:
            self._start = (time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds())
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc_info):
        if self._start is None:
            return False
        wall0, busy0, own0 = self._start
        wall = time.perf_counter() - wall0
        others = (_busy_cpu_seconds() - busy0) - (_own_cpu_seconds() - own0)
        capacity = wall * (os.cpu_count() or 1)
        self.share = min(max(others / capacity, 0.0), 1.0) if capacity > 0 else None
        return False


def machine_info(device="cpu"):
    """A description of where a benchmark ran: CPU, memory, load, versions, GPU."""
    import numpy
    import speechbrain
    import torch

    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib(),
        "load_average_at_start": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "speechbrain": speechbrain.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def command_line():
    """The command that is running, as one could retype it."""
    return " ".join(["python"] + [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def mean_std(values):
    """(mean, sample standard deviation; 0.0 for a single value) of a sequence.

    Example
    -------
    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 1.0)
    >>> mean_std([4.0])
    (4.0, 0.0)
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def paired_test(differences):
    """How sure a set of paired differences ``a - b`` is: a dict of ``n``, ``mean``, ``sd``,
    ``lower`` (pairs where ``a`` is lower), the one-sample ``t`` against 0 with its two-sided
    ``p_t`` (both None under two pairs or with no spread) and ``p_sign``, the two-sided sign
    test over the nonzero differences (None when all are zero).

    Example
    -------
    >>> result = paired_test([-1.0, -2.0, -3.0])
    >>> result["lower"], round(result["t"], 2), round(result["p_t"], 3), result["p_sign"]
    (3, -3.46, 0.074, 0.25)
    """
    mean, sd = mean_std(differences)
    n = len(differences)
    t = p_t = p_sign = None
    if n > 1 and sd > 0:  # scipy returns nan for no spread
        result = stats.ttest_1samp(differences, 0.0)
        t, p_t = float(result.statistic), float(result.pvalue)
    lower = sum(d < 0 for d in differences)
    nonzero = sum(d != 0 for d in differences)
    if nonzero:
        p_sign = float(stats.binomtest(lower, nonzero).pvalue)
    return {"n": n, "mean": mean, "sd": sd, "lower": lower, "t": t, "p_t": p_t, "p_sign": p_sign}


def evidence(test):
    """A :func:`paired_test` result in words.

    Example
    -------
    >>> evidence(paired_test([-1.0, -2.0, -3.0]))
    'lower in 3 of 3 pairs; paired t = -3.46 (2 df), p = 0.07; sign test p = 0.25'
    """
    text = f"lower in {test['lower']} of {test['n']} pair{'s' if test['n'] != 1 else ''}"
    if test["t"] is not None:
        text += f"; paired t = {test['t']:.2f} ({test['n'] - 1} df), p = {test['p_t']:.2f}"
    if test["p_sign"] is not None:
        text += f"; sign test p = {test['p_sign']:.2f}"
    return text


def seeded_name(name, seed=None):
    """The run name of experiment ``name`` at ``seed``: ``name_s<seed>``, or ``name`` alone.

    The one naming rule for seeds (run folders, noise-robustness models).

    Example
    -------
    >>> seeded_name("tr34_conv_single", 3), seeded_name("tr34_conv_single")
    ('tr34_conv_single_s3', 'tr34_conv_single')
    """
    return f"{name}_s{seed}" if seed else name


def split_seed(run):
    """``(name, seed)`` of a run name made by :func:`seeded_name`; seed None without one.

    Example
    -------
    >>> split_seed("tr34_conv_single_s3"), split_seed("none_s1"), split_seed("ecapa128_single")
    (('tr34_conv_single', 3), ('none', 1), ('ecapa128_single', None))
    """
    name, _, seed = run.rpartition("_s")
    return (name, int(seed)) if name and seed.isdigit() else (run, None)


def common_seeds(runs, first, second):
    """The sorted seeds that both experiments have, from a mapping keyed by (name, seed).

    The one pairing rule of the benchmarks: runs of two experiments pair when their seeds
    (same data order and initialization) are equal.

    Example
    -------
    >>> common_seeds({("a", 1): 0, ("a", 2): 0, ("b", 2): 0, ("b", 3): 0}, "a", "b")
    [2]
    """
    return sorted({seed for name, seed in runs if name == first}
                  & {seed for name, seed in runs if name == second})


def markdown_table(header, rows):
    """A markdown table from a header and rows of already formatted cells.

    Example
    -------
    >>> print(markdown_table(["a", "b"], [[1, "x"]]))
    | a | b |
    |---|---|
    | 1 | x |
    """
    lines = ["| " + " | ".join(str(h) for h in header) + " |"]
    lines.append("|" + "---|" * len(header))
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"markdown_table: row {row} has {len(row)} cells, not {len(header)}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def write_json(path, data):
    """Writes ``data`` as indented JSON, atomically (parent folders are created)."""
    atomic_write_json(path, data)


def write_markdown(path, text):
    """Writes markdown text (with a final newline), atomically."""
    atomic_write_text(path, text.rstrip("\n") + "\n")


def named_paths(parser, specs, what="NAME=PATH"):
    """``["a=x", "b=y"]`` -> ``[("a", "x"), ("b", "y")]``; anything else is a usage error.

    Example
    -------
    >>> import argparse
    >>> named_paths(argparse.ArgumentParser(), ["ours=runs/a", "zoo=pretrained/b=c"])
    [('ours', 'runs/a'), ('zoo', 'pretrained/b=c')]
    """
    pairs = [tuple(spec.split("=", 1)) for spec in specs]
    if not all(len(pair) == 2 and all(pair) for pair in pairs):
        parser.error(f"--model takes {what}")
    return pairs


def write_results(output, result, text):
    """``<output>.json`` (``result``) and ``<output>.md`` (``text``), then ``text`` printed."""
    write_json(output + ".json", result)
    write_markdown(output + ".md", text)
    print(text)
