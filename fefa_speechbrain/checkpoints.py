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

from speechbrain.utils.checkpoints import Checkpoint, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

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
        finally:
            self._staging = False
        ddp_barrier()
        if staged is None:  # not the main process
            return None
        final = staged.path.parent / staged.path.name[len(STAGING_PREFIX) :]
        if final.exists():  # re-saving a custom-named checkpoint
            shutil.rmtree(final)
        os.replace(staged.path, final)
        _fsync_dir(final.parent)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, "Saved an %s checkpoint in %s", kind, final)
        paramfiles = {key: final / path.name for key, path in staged.paramfiles.items()}
        return Checkpoint(final, staged.meta, paramfiles)


def _fsync_dir(path):
    """Makes a rename durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
