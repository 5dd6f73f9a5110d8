"""A Checkpointer whose checkpoints appear only once they are complete.

SpeechBrain's ``Checkpointer.save_checkpoint`` writes ``CKPT.yaml`` first and the
parameter files after it, in the final directory. A job killed in between leaves a
directory that looks complete (it has its meta file) but holds a truncated
``embedding_model.ckpt``; the next start recovers from it and crashes, or worse, loads
half a model. :class:`AtomicCheckpointer` writes every checkpoint into a staging
directory whose name SpeechBrain does not recognize (``partial-CKPT+...``) and renames it
into place when every file is written: a checkpoint directory is either complete or
absent. Leftover staging directories of a killed run are removed at start.
"""

import logging
import os
import shutil
from collections.abc import Mapping

import torch
from speechbrain.dataio.encoder import CategoricalEncoder  # noqa: F401 (doctest)
from speechbrain.utils.checkpoints import (
    Checkpoint,
    Checkpointer,
    hook_on_loading_state_dict_checkpoint,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from fefa_speechbrain.atomic import fsync_path

logger = logging.getLogger(__name__)

STAGING_PREFIX = "partial-"


class AtomicCheckpointer(Checkpointer):
    """Drop-in replacement for ``speechbrain.utils.checkpoints.Checkpointer``.

    Example
    -------
    >>> import torch
    >>> tmp = getfixture("tmpdir")
    >>> model = torch.nn.Linear(2, 2)
    >>> ckpt = AtomicCheckpointer(tmp, recoverables={"model": model}).save_checkpoint()
    >>> ckpt.path.name.startswith("CKPT+"), sorted(p.name for p in ckpt.path.iterdir())
    (True, ['CKPT.yaml', 'model.ckpt'])
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._staging = False
        if if_main_process():
            self.remove_partial_checkpoints()

    def remove_partial_checkpoints(self):
        """Deletes staging directories left by a run killed while saving."""
        if not self.checkpoints_dir.is_dir():
            return
        for path in self.checkpoints_dir.iterdir():
            if path.is_dir() and path.name.startswith(STAGING_PREFIX):
                logger.warning("Removing incomplete checkpoint %s (interrupted save)", path)
                shutil.rmtree(path, ignore_errors=True)

    def _staged(self, path):
        return path.parent / (STAGING_PREFIX + path.name) if self._staging else path

    def _new_checkpoint_dirpath(self):
        return self._staged(super()._new_checkpoint_dirpath())

    def _custom_checkpoint_dirpath(self, name):
        return self._staged(super()._custom_checkpoint_dirpath(name))

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Saves into a staging directory, then renames it to its final name."""
        self._staging = True
        try:
            staged = super().save_checkpoint(
                meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=logging.DEBUG
            )
        except (OSError, RuntimeError) as error:  # torch.save names no file
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise type(error)(
                f"saving a checkpoint in {self.checkpoints_dir} failed (disk full or not "
                f"writable?): {first}. The previous checkpoints are intact; free space and "
                "run the same command again."
            ) from error
        finally:
            self._staging = False
        ddp_barrier()
        if staged is None:  # not the main process
            return None
        final = staged.path.parent / staged.path.name[len(STAGING_PREFIX) :]
        if final.exists():  # re-saving a custom-named checkpoint
            shutil.rmtree(final)
        os.replace(staged.path, final)
        fsync_path(final.parent)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, "Saved an %s checkpoint in %s", kind, final)
        paramfiles = {key: final / path.name for key, path in staged.paramfiles.items()}
        return Checkpoint(final, staged.meta, paramfiles)


class PretrainedFolderError(ValueError):
    """A pretrained folder, or the experiment it comes from, cannot give a working model."""


def load_checked_state_dict(module, path):
    """Loads a state dict into ``module``, refusing any missing or mismatching weight.

    The exported yaml's Pretrainer calls it for ``embedding_model`` and ``classifier``
    (SpeechBrain's default transfer would only log missing keys and go on).

    Arguments
    ---------
    module : torch.nn.Module
        The module as the yaml builds it.
    path : str or Path
        The ``.ckpt`` file (a state dict saved with ``torch.save``).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> torch.save(torch.nn.Linear(4, 3).state_dict(), f"{tmp}/classifier.ckpt")
    >>> load_checked_state_dict(torch.nn.Linear(4, 3), f"{tmp}/classifier.ckpt")
    >>> load_checked_state_dict(torch.nn.Linear(4, 5), f"{tmp}/classifier.ckpt")
    Traceback (most recent call last):
    ...
    fefa_speechbrain.checkpoints.PretrainedFolderError: .../classifier.ckpt does not fit the Linear
    ...: shape mismatch: weight is [3, 4] in the file, [5, 4] in the model; ...
    """
    state = read_state_dict(path)
    problems = state_dict_mismatches(module, state)
    if problems:
        raise PretrainedFolderError(
            f"{path} does not fit the {type(module).__name__} that hyperparams.yaml "
            f"builds: {'; '.join(problems)}. The file was saved from a model with other "
            "hyperparameters (e.g. width, emb_dim, n_speakers, fefa, head)."
        )
    module.load_state_dict(state, strict=True)


def read_state_dict(path):
    """A state dict from a ``.ckpt`` file, with an error naming the file if it is not one.

    Example
    -------
    >>> read_state_dict("nowhere/embedding_model.ckpt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: nowhere/embedding_model.ckpt is missing
    """
    if not os.path.isfile(path):
        target = os.path.realpath(path)
        link = ""
        if target != os.path.abspath(path):
            link = f" (a link to {target}, which does not exist)"
        raise FileNotFoundError(f"{path} is missing{link}")
    target = os.path.realpath(path)
    link = f" (a link to {target})" if target != os.path.abspath(path) else ""
    try:  # tensors only: a pickle that would run code is refused
        state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # a text or foreign file fails in the unpickler anywhere
        raise PretrainedFolderError(
            f"{path}{link} cannot be read as a PyTorch state dict (truncated, not a "
            "checkpoint, or holding Python objects that weights_only=True refuses): "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    state = hook_on_loading_state_dict_checkpoint(state)
    if not isinstance(state, Mapping):
        raise PretrainedFolderError(
            f"{path} holds a {type(state).__name__}, not a state dict of parameters"
        )
    return state


def state_dict_mismatches(module, state, limit=5):
    """Human-readable differences between ``module.state_dict()`` and ``state``.

    Example
    -------
    >>> state_dict_mismatches(torch.nn.Linear(2, 2), {"weight": torch.zeros(2, 2)})
    ['missing from the file: bias']
    """
    expected = module.state_dict()
    problems = []
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} is {list(state[key].shape)} in the file, {list(value.shape)} in the model"
        for key, value in expected.items()
        if key in state and tuple(getattr(state[key], "shape", ())) != tuple(value.shape)
    ]
    for label, items in (
        ("missing from the file", missing),
        ("not in the model", unexpected),
        ("shape mismatch", shapes),
    ):
        if items:
            more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
            separator = "; " if label == "shape mismatch" else ", "
            problems.append(f"{label}: {separator.join(items[:limit])}{more}")
    return problems


def load_label_encoder(encoder, path):
    """Loads the speaker labels into ``encoder``; the Pretrainer hook for ``label_encoder``.

    SpeechBrain's own hook (``load_if_possible``) silently leaves the encoder empty when
    the file is missing; this one raises.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> saved = CategoricalEncoder()
    >>> saved.update_from_iterable(["id10001", "id10002"])
    >>> saved.save(f"{tmp}/label_encoder.ckpt")
    >>> encoder = CategoricalEncoder()
    >>> load_label_encoder(encoder, f"{tmp}/label_encoder.ckpt")
    >>> encoder.decode_ndim([1, 0])
    ['id10002', 'id10001']
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: the speaker labels cannot be loaded")
    try:
        encoder.load(path)
    except (ValueError, SyntaxError) as error:
        raise PretrainedFolderError(
            f"{path} is not a CategoricalEncoder label file: {error}"
        ) from error
    encoder.ignore_len()
