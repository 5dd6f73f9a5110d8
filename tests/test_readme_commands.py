"""Every shell line of README.md, the recipe README and the model card that needs neither
VoxCeleb nor a GPU nor a long run, run as written in a copy of the checkout.

The copy holds the tracked files only (as a fresh clone does) plus a link to the project's
``.venv`` (its ``bin`` first on PATH, for ``fefa-speechbrain``). Each fenced bash block is
one bash script run from the copy's root (``set -e``: a failing line fails the test);
lines or blocks in SKIP are left out, each for the reason given. A SKIP entry that
matches nothing fails the test, so the list cannot go stale.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "recipes/VoxCeleb/FEFA/README.md",
        "pretrained/fefa-ecapa128-speechcommands/README.md")
VOXCELEB = "needs VoxCeleb (or a corpus under /data)"
PLACEHOLDER = "placeholders (MODEL, DIR, a.wav): the concrete block after it runs"
# (doc, substring of the line, reason, "line" or "block": the whole block it is in)
SKIP = [
    ("README.md", "bash scripts/demo.sh", "the whole demo: 9 minutes (tests/test_demo.py runs it small)", "line"),
    ("README.md", "bash scripts/test.sh", "the whole test suite, this test included", "line"),
    ("README.md", "fefa-speechbrain embed MODEL", PLACEHOLDER, "block"),
    ("README.md", "--data_folder=/data/voxceleb2/dev", VOXCELEB, "block"),
    ("README.md", "--data_folder=/data/my_speakers", "needs your own corpus under /data", "block"),
    ("recipes/VoxCeleb/FEFA/README.md", "python demo.py", "the whole demo: 9 minutes", "line"),
    ("recipes/VoxCeleb/FEFA/README.md", "/data/", VOXCELEB, "block"),
    ("recipes/VoxCeleb/FEFA/README.md", "export_pretrained.py results/", "needs a trained run (VoxCeleb)", "block"),
    ("recipes/VoxCeleb/FEFA/README.md", "torchrun --nproc_per_node=4", "4 GPUs and VoxCeleb ($DATA)", "block"),
    ("recipes/VoxCeleb/FEFA/README.md", "../shared/tools/speechbrain-checks",
     "SpeechBrain's shared recipe checks, outside the repository (.ci/run runs them)", "block"),
    ("recipes/VoxCeleb/FEFA/README.md", "-m pytest tests/test_recipe.py", "part of the test suite", "block"),
    ("pretrained/fefa-ecapa128-speechcommands/README.md", "pip install .",
     "installs into the environment (scripts/check_wheel.sh checks the install)", "line"),
    ("pretrained/fefa-ecapa128-speechcommands/README.md", "bench_converge.py ecapa128_aam_reverb",
     "the training: the Speech Commands corpus and about 15 minutes", "block"),
    ("pretrained/fefa-ecapa128-speechcommands/README.md", "--data_folder=DATA",
     "the training step, placeholders DATA and RUNS", "block"),
]
TIMEOUT = 240


def bash_blocks(doc):
    """The fenced bash blocks of a doc, each as its logical lines (continuations joined)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S)
    return [re.sub(r"\\\n\s*", " ", block).splitlines() for block in blocks]


def runnable(doc, used):
    """(script, lines) of every block of ``doc`` that SKIP leaves something of."""
    scripts = []
    for lines in bash_blocks(doc):
        entries = [(i, entry) for i, entry in enumerate(SKIP) if entry[0] == doc]
        block_skip = [i for i, (_, text, _, scope) in entries if scope == "block"
                      and any(text in line for line in lines)]
        if block_skip:
            used.update(block_skip)
            continue
        kept = []
        for line in lines:
            hits = [i for i, (_, text, _, _) in entries if text in line]
            used.update(hits)
            if not hits and line.strip() and not line.strip().startswith("#"):
                kept.append(line)
        if kept:
            scripts.append(kept)
    return scripts


def fresh_copy(destination):
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    os.symlink(ROOT / ".venv", destination / ".venv")


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    if not (ROOT / ".venv" / "bin" / "fefa-speechbrain").exists():
        pytest.skip("the project's .venv (bash scripts/setup_env.sh) is needed")
    destination = tmp_path_factory.mktemp("clone")
    fresh_copy(destination)
    return destination


def test_skip_list_is_current():
    used = set()
    for doc in DOCS:
        runnable(doc, used)
    stale = [SKIP[i][:2] for i in range(len(SKIP)) if i not in used]
    assert not stale, f"SKIP entries that match no line: {stale}"


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands_run_as_written(doc, copy):
    scripts = runnable(doc, set())
    assert scripts, f"{doc}: nothing left to run"
    env = {**os.environ, "PATH": f"{copy / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(copy)}  # the copy's package, not the checkout's
    env.pop("VIRTUAL_ENV", None)
    for lines in scripts:
        script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
        result = subprocess.run(["bash", "-c", script], cwd=copy, env=env, capture_output=True,
                                text=True, timeout=TIMEOUT)
        assert result.returncode == 0, f"{doc}:\n{script}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
