"""Test-session set-up shared by tests/ and the package doctests."""
import sys

import speechbrain  # noqa: F401  (puts its lazy redirect modules in sys.modules)
from speechbrain.utils.importutils import LazyModule


def _drop_unimportable_speechbrain_redirects():
    """Removes SpeechBrain's lazy redirect modules that cannot be imported.

    ``import speechbrain`` puts deprecated-path redirects (``speechbrain.k2_integration``,
    ``speechbrain.wordemb``, ...) in ``sys.modules``; reading any attribute of one whose
    optional dependency is missing (k2, spacy, flair, transformers) raises ImportError
    instead of AttributeError. Hypothesis reads ``__file__`` of every module in
    ``sys.modules`` and would crash at collection (speechbrain issue #2995).
    Importing such a redirect fails either way, so dropping it changes nothing else.
    """
    for name, module in list(sys.modules.items()):
        if isinstance(module, LazyModule):
            try:
                getattr(module, "__file__", None)
            except ImportError:
                del sys.modules[name]


_drop_unimportable_speechbrain_redirects()

# Old import paths that are the moved modules themselves (sys.modules aliases): their
# doctests are collected from the new files, and pytest cannot import an alias as a file.
collect_ignore = [f"fefa_speechbrain/evaluation/{name}.py" for name in (
    "inference", "model_source", "embedding_files", "input_length")]


import pytest  # noqa: E402


@pytest.fixture
def run_cli(capsys):
    """Runs ``fefa-speechbrain ARG...`` in this process: ``(exit status, stdout, stderr)``."""
    from fefa_speechbrain.cli import main

    def run(*argv):
        status = main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run
