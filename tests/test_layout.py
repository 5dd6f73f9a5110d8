"""The package layout: using a model lives in ``inference/``, old import paths still work,
and ``inference/`` never imports ``evaluation/`` (no cycle between the two)."""

import ast
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fefa_speechbrain"
MOVED = {"inference": "embedder", "model_source": "model_source",
         "embedding_files": "embedding_files", "input_length": "input_length"}


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_import_path_is_the_same_module(old, new):
    before = importlib.import_module(f"fefa_speechbrain.evaluation.{old}")
    after = importlib.import_module(f"fefa_speechbrain.inference.{new}")
    assert before is after  # so monkeypatching either path patches the module in use


def _imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_inference_does_not_import_evaluation():
    files = sorted((PACKAGE / "inference").glob("*.py"))
    assert len(files) >= 5
    offending = [(path.name, name) for path in files for name in _imported_modules(path)
                 if name.startswith("fefa_speechbrain.evaluation")]
    assert offending == []
