"""Finding a corpus' audio files: VoxCeleb's ``wav/<speaker>/<video>/<utt>.wav`` under
one or several roots, or any ``<root>/<speaker>/[<session>/]<utt>.<ext>`` folder.
"""

import logging
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass

import soundfile as sf

from fefa_speechbrain.data.audio import conversion_hint, is_unsupported

logger = logging.getLogger(__name__)

VOX1_TEST_ZIP = "vox1_test_wav.zip"
_CSV_VARIABLE = re.compile(r"\$[\w.]+")
# Files with these extensions are audio: when not read, the report says why.
AUDIO_EXTENSIONS = {"." + name.lower() for name in sf.available_formats()} | {
    ".mp3", ".m4a", ".aac", ".mp4", ".wma", ".opus", ".amr", ".webm", ".3gp", ".aif",
    ".aiff", ".oga", ".spx", ".ape", ".wv", ".mka",
}

@dataclass(frozen=True)
class Utterance:
    """One audio file of a corpus.

    Attributes
    ----------
    parts : tuple of str
        Path components below the audio root, extension removed:
        ``(speaker, video, utt)`` or ``(speaker, utt)``.
    rel : str
        Path below the audio root with extension, ``/``-separated (trial-list form).
    path : str
        Absolute path.
    size : int
        Bytes.
    root : int
        Index of the data folder it comes from.
    """

    parts: tuple
    rel: str
    path: str
    size: int
    root: int = 0

    @property
    def speaker(self):
        return self.parts[0]

    @property
    def uid(self):
        """Base of the training IDs: ``spk--video--utt``."""
        return "--".join(self.parts)

    @property
    def trial_id(self):
        """ID in enrol/test CSVs: the trial-list path without extension."""
        return "/".join(self.parts)




def name_problem(rel):
    """Why a file name cannot go through the formats it feeds (None when it can).

    Trial lists quote names with spaces; SpeechBrain's CSV loader reads ``$word`` as a
    variable to replace, and no line-based format holds a line break.

    Example
    -------
    >>> name_problem("spk/zoom in_01.wav") is None
    True
    >>> name_problem("spk/take$1.wav")
    "'$1.wav' in the name: SpeechBrain's CSV loader reads $name as a variable; rename the file"
    """
    variable = _CSV_VARIABLE.search(rel)
    if variable:
        return (
            f"'{variable.group(0)}' in the name: SpeechBrain's CSV loader reads $name as a "
            "variable; rename the file"
        )
    if "\n" in rel or "\r" in rel:
        return "a line break in the name: no line-based list can hold it; rename the file"
    return None


def _ignore(ignored, path, reason):
    logger.warning("not used: %s: %s", path, reason)
    if ignored is not None:
        ignored.append({"path": path, "action": "skipped", "reasons": [reason]})


def _walk(folder, max_depth, prefix=(), ignored=None):
    """Yields ``(parts, DirEntry)`` of the files at most ``max_depth`` levels down;
    folders that cannot be listed and links to nothing go to ``ignored``."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        _ignore(ignored, folder, f"folder cannot be listed: {err.strerror or err}")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        parts = prefix + (entry.name,)
        if entry.is_dir():
            if len(parts) < max_depth:
                yield from _walk(entry.path, max_depth, parts, ignored)
            else:
                _ignore(ignored, entry.path, f"a folder deeper than {max_depth} levels")
        elif entry.is_file():
            yield parts, entry
        elif entry.is_symlink():
            target = os.readlink(entry.path)
            _ignore(ignored, entry.path, f"a link to {target}, which does not exist")


def _scan(base, depths, extensions, root=0, ignored=None):
    """Audio files ``depths`` levels below ``base``; also m4a files with no converted twin.
    Every other file is listed in ``ignored`` with the reason."""
    found, unsupported = [], []
    for parts, entry in _walk(base, max(depths), ignored=ignored):
        stem, ext = os.path.splitext(parts[-1])
        key = parts[:-1] + (stem,)
        if ext.lower() not in extensions and ext.lower() not in AUDIO_EXTENSIONS:
            continue  # not audio (README, transcripts, ...)
        if len(parts) not in depths:
            _ignore(ignored, entry.path, "not at <speaker>/[<session>/]<file>")
        elif ext.lower() in extensions:
            rel = "/".join(parts)
            problem = name_problem(rel)
            if problem is None:
                found.append(Utterance(key, rel, entry.path, entry.stat().st_size, root))
            else:
                _ignore(ignored, entry.path, problem)
        elif is_unsupported(entry.name):
            unsupported.append((key, entry.path))
        else:
            _ignore(
                ignored, entry.path,
                f"extension {ext or '(none)'} is not read (extensions: {sorted(extensions)}); "
                "convert it to WAV or FLAC, or add the extension if soundfile reads it",
            )
    converted = {u.parts for u in found}
    return found, [path for key, path in unsupported if key not in converted]


def scan_voxceleb(roots, ignored=None):
    utterances, unsupported, bases = [], [], []
    for number, root in enumerate(roots):
        base = os.path.join(root, "wav")
        if os.path.isdir(base):
            found, m4a = _scan(base, (3,), (".wav",), number, ignored)
        elif os.path.isdir(os.path.join(root, "aac")):
            base = os.path.join(root, "aac")
            found, m4a = _scan(base, (3,), (), number)
        else:
            raise FileNotFoundError(
                f"{root}: no 'wav' folder; expected {root}/wav/idNNNNN/<video>/<utt>.wav"
            )
        utterances.extend(found)
        unsupported.extend(m4a)
        bases += [base] if m4a else []
    if unsupported:
        raise ValueError(_unsupported_message(unsupported, bases))
    if not utterances:
        raise FileNotFoundError(f"no .wav files in {[os.path.join(r, 'wav') for r in roots]}")
    _check_unique(utterances)
    return utterances


def scan_folder(root, extensions, ignored=None):
    utterances, unsupported = _scan(root, (2, 3), extensions, ignored=ignored)
    if unsupported:
        raise ValueError(_unsupported_message(unsupported, [root]))
    if not utterances:
        raise FileNotFoundError(
            f"no audio files with extensions {extensions} in {root}/<speaker>/[<session>/]"
        )
    _check_unique(utterances)
    return utterances


def _unsupported_message(paths, folders):
    """One error for all m4a files: count, an example, the ffmpeg commands."""
    example = paths[0]
    lines = [
        f"found {len(paths)} m4a/aac/mp4 files that soundfile cannot read, e.g. {example}.",
        "Convert them to 16 kHz mono WAV next to the originals; one file:",
        "  " + conversion_hint(example).split("e.g. ", 1)[1],
        "a whole folder:",
    ]
    for folder in folders:
        lines.append(
            f"  find {folder} -name '*.m4a' -exec sh -c "
            "'ffmpeg -nostdin -loglevel error -i \"$1\" -ac 1 -ar 16000 \"${1%.m4a}.wav\"' _ {} \\;"
        )
    if any(os.path.basename(folder) == "aac" for folder in folders):
        lines.append(
            "VoxCeleb2 ships <root>/aac/: prepare_voxceleb reads <root>/wav/, so rename the "
            "converted folder (mv <root>/aac <root>/wav) or link it."
        )
    return "\n".join(lines)


def _check_unique(utterances):
    seen = defaultdict(list)
    for utt in utterances:
        seen[utt.parts].append(utt.path)
    clashes = [paths for paths in seen.values() if len(paths) > 1]
    if clashes:
        shown = "; ".join(", ".join(paths) for paths in clashes[:5])
        raise ValueError(
            f"{len(clashes)} utterance id(s) are given by more than one file (keep one "
            f"of each): {shown}"
        )


def utterance_index(utterances):
    return {u.rel: u for u in utterances}


def trial_speakers(trials, index):
    return {index[rel].speaker for trial in trials or () for rel in (trial.enrol, trial.test)}


def trial_utterances(trials, index):
    rels = dict.fromkeys(rel for trial in trials or () for rel in (trial.enrol, trial.test))
    return [index[rel] for rel in rels]


def unpack_vox1_test(source, root):
    if not os.path.isdir(os.path.join(root, "wav", "id10270")):
        archive = os.path.join(source, VOX1_TEST_ZIP)
        if not os.path.isfile(archive):
            raise FileNotFoundError(f"source: {archive} does not exist")
        logger.info("extracting %s to %s", archive, root)
        shutil.unpack_archive(archive, root)
    meta = os.path.join(source, "meta")
    if os.path.isdir(meta) and not os.path.exists(os.path.join(root, "meta")):
        shutil.copytree(meta, os.path.join(root, "meta"))


