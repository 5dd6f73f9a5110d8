"""A checkpoint interrupted while being written is never loaded."""
import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from fefa_speechbrain.checkpoints import STAGING_PREFIX, AtomicCheckpointer


class Killed(Exception):
    pass


def _crashing_save(obj, path):
    with open(path, "wb") as fout:
        fout.write(b"truncated")
    raise Killed()


def test_interrupted_save_is_invisible(tmp_path):
    model = torch.nn.Linear(3, 3)
    ckpt = AtomicCheckpointer(tmp_path, recoverables={"model": model})
    good = ckpt.save_checkpoint(meta={"epoch": 1})
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    with torch.no_grad():
        model.weight.add_(1.0)
    crashing = AtomicCheckpointer(
        tmp_path, recoverables={"model": model}, custom_save_hooks={"model": _crashing_save}
    )
    with pytest.raises(Killed):
        crashing.save_checkpoint(meta={"epoch": 2})
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert len(leftovers) == 1  # the half-written one, under a name SpeechBrain ignores

    # SpeechBrain's own Checkpointer does not see it; a restart removes it and
    # recovers the last complete checkpoint.
    assert [c.path for c in Checkpointer(tmp_path).list_checkpoints()] == [good.path]
    fresh = torch.nn.Linear(3, 3)
    restarted = AtomicCheckpointer(tmp_path, recoverables={"model": fresh})
    assert not any(p.name.startswith(STAGING_PREFIX) for p in tmp_path.iterdir())
    recovered = restarted.recover_if_possible()
    assert recovered.path == good.path and recovered.meta["epoch"] == 1
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, saved[key])


def test_save_and_keep_only_returns_final_paths(tmp_path):
    model = torch.nn.Linear(2, 2)
    ckpt = AtomicCheckpointer(tmp_path, recoverables={"model": model})
    for error in (0.5, 0.3, 0.4):
        ckpt.save_and_keep_only(meta={"ErrorRate": error}, min_keys=["ErrorRate"])
    kept = sorted(c.meta["ErrorRate"] for c in ckpt.list_checkpoints())
    assert kept == [0.3, 0.4]  # the best and the most recent
    assert all(c.paramfiles["model"].is_file() for c in ckpt.list_checkpoints())
