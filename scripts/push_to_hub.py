"""Checks a pretrained folder, then uploads it to the Hugging Face hub.

    python scripts/push_to_hub.py pretrained/fefa-ecapa128-speechcommands OWNER/NAME --dry-run
    python scripts/push_to_hub.py pretrained/fefa-ecapa128-speechcommands OWNER/NAME  # uploads

The checks run before anything is sent, and alone with ``--dry-run``:

- every file the yaml's ``pretrainer`` loads (``<key>.ckpt``) is in the folder;
- no text file holds an absolute local path, and no file is above the hub's limits;
- the card (README.md) starts with YAML front-matter that parses, with a license;
- the folder loads offline with SpeechBrain's ``SpeakerRecognition.from_hparams`` and
  embeds its ``example/`` clips to finite embeddings.

The upload (``huggingface_hub.HfApi.upload_folder``) needs a network and a token
(``HF_TOKEN`` or ``huggingface-cli login``); it is not tested here. Once uploaded, the
model loads by its hub id wherever a MODEL is taken (``fefa-speechbrain verify OWNER/NAME``).
"""

import argparse
import math
import os
import re
import sys

import yaml

HUB_FILE_LIMIT = 50 * 1000 ** 3  # the hub refuses larger files
LFS_THRESHOLD = 10 * 1000 ** 2  # larger files go through Git LFS (upload_folder does it)
TEXT_EXTENSIONS = (".yaml", ".yml", ".json", ".md", ".txt")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(/(?:home|work|tmp|root|data|mnt|Users|var|opt)/[^\s'\"`)]+"
                           r"|[A-Za-z]:\\[^\s'\"`)]+)")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class FolderProblem(Exception):
    """What is wrong with the folder, naming the file."""


def pretrainer_files(folder):
    """The files the yaml's SpeechBrain ``Pretrainer`` loads: ``paths[key]``, else ``<key>.ckpt``."""
    from hyperpyyaml import load_hyperpyyaml

    path = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(path):
        raise FolderProblem(f"{path} is missing: not a SpeechBrain pretrained folder")
    try:
        with open(path, encoding="utf-8") as handle:
            pretrainer = load_hyperpyyaml(handle).get("pretrainer")
    except Exception as error:  # any yaml that does not build is the finding
        raise FolderProblem(f"{path} does not load: {type(error).__name__}: "
                            f"{' '.join(str(error).split())[:300]}") from error
    if pretrainer is None or not pretrainer.loadables:
        raise FolderProblem(f"{path} has no pretrainer loadables: from_hparams would load no weights")
    return {key: str(pretrainer.paths.get(key, f"{key}.ckpt")) for key in pretrainer.loadables}


def check_files(folder):
    """Problems with the folder's files (missing, absolute paths, sizes); [] if none."""
    problems = []
    for key, name in pretrainer_files(folder).items():
        if os.path.isabs(name) or not os.path.isfile(os.path.join(folder, name)):
            problems.append(f"{os.path.join(folder, name)}: the pretrainer loads {key} from it, "
                            "and it is not a file in the folder")
    for parent, _, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.join(parent, name)
            if os.path.islink(path):
                problems.append(f"{path} is a link: the hub stores files, not links")
                continue
            size = os.path.getsize(path)
            if size > HUB_FILE_LIMIT:
                problems.append(f"{path}: {size / 1e9:.1f} GB, above the hub's 50 GB per file")
            if name.endswith(TEXT_EXTENSIONS):
                with open(path, encoding="utf-8", errors="replace") as handle:
                    for number, line in enumerate(handle, 1):
                        found = ABSOLUTE_PATH.search(line)
                        if found:
                            problems.append(f"{path}:{number}: absolute local path "
                                            f"{found.group(0)!r} (it means nothing on the hub)")
    return problems


def check_card(folder):
    """Problems with README.md's front-matter; [] if none."""
    path = os.path.join(folder, "README.md")
    if not os.path.isfile(path):
        return [f"{path} is missing: the hub shows it as the model card"]
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    if match is None:
        return [f"{path} does not start with front-matter (a '---' line, YAML, a '---' line)"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as error:
        return [f"{path}: the front-matter is not YAML: {' '.join(str(error).split())}"]
    if not isinstance(meta, dict):
        return [f"{path}: the front-matter is not a mapping of fields"]
    return [f"{path}: the front-matter has no {key!r}" for key in ("license", "tags") if key not in meta]


def check_loads(folder):
    """(problems, number of example clips embedded): loads offline and embeds ``example/``."""
    import torch
    from speechbrain.inference.speaker import SpeakerRecognition

    from fefa_speechbrain.data.audio import load_audio

    try:
        model = SpeakerRecognition.from_hparams(source=os.path.abspath(folder), savedir=None)
    except Exception as error:  # any failure to load is the finding
        return [f"{folder}: SpeakerRecognition.from_hparams fails: {type(error).__name__}: "
                f"{' '.join(str(error).split())[:300]}"], 0
    examples = os.path.join(folder, "example")
    clips = sorted(os.path.join(examples, name) for name in os.listdir(examples)) if os.path.isdir(examples) else []
    if not clips:
        return [f"{examples}: no example clips to embed"], 0
    problems = []
    for clip in clips:
        wav = load_audio(clip)
        with torch.no_grad():
            embedding = model.encode_batch(wav[None]).flatten()
        if not all(math.isfinite(float(x)) for x in embedding) or float(embedding.norm()) == 0:
            problems.append(f"{clip}: the embedding is zero or not finite")
    return problems, len(clips)


def check_folder(folder):
    """Every problem found (the file checks first; loading only when they pass)."""
    if not os.path.isdir(folder):
        raise FolderProblem(f"{folder} is not a folder")
    problems = check_files(folder) + check_card(folder)
    if problems:
        return problems, 0
    return check_loads(folder)


def upload(folder, repo_id, private):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model",
                             commit_message=f"Upload {os.path.basename(os.path.normpath(folder))}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a pretrained folder (export_pretrained.py's output)")
    parser.add_argument("repo_id", help="OWNER/NAME on the hub")
    parser.add_argument("--dry-run", action="store_true", help="check only; send nothing")
    parser.add_argument("--private", action="store_true", help="create the hub repository private")
    args = parser.parse_args(argv)
    if not REPO_ID.match(args.repo_id):
        parser.error(f"repo_id {args.repo_id!r}: give OWNER/NAME")
    try:
        problems, embedded = check_folder(args.folder)
    except FolderProblem as error:
        problems, embedded = [str(error)], 0
    if problems:
        print(f"push_to_hub: {args.folder} is not ready for the hub:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    large = [name for name in os.listdir(args.folder)
             if os.path.getsize(os.path.join(args.folder, name)) > LFS_THRESHOLD]
    print(f"{args.folder}: ready for {args.repo_id} (files present, no absolute paths, card "
          f"front-matter parses, loads offline, {embedded} example clips embedded"
          + (f"; through Git LFS: {', '.join(large)}" if large else "") + ")")
    if args.dry_run:
        return 0
    commit = upload(args.folder, args.repo_id, args.private)
    print(f"uploaded: {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
