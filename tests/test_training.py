"""SpeakerBrain's learning-rate warm-up, driven step by step outside a full training run."""

import pytest
import torch
from speechbrain.nnet.schedulers import LinearScheduler
from speechbrain.utils.epoch_loop import EpochCounter

from recipe_scripts import load_script

SpeakerBrain = load_script("train_speaker_embeddings").SpeakerBrain


def make_brain(warmup_steps, lr=0.01, lr_final=0.001, epochs=3):
    hparams = {
        "lr_annealing": LinearScheduler(lr, lr_final, epochs),
        "epoch_counter": EpochCounter(epochs),
    }
    if warmup_steps is not None:
        hparams["lr_warmup_steps"] = warmup_steps
    brain = SpeakerBrain(
        modules={"model": torch.nn.Linear(2, 2)},
        opt_class=lambda params: torch.optim.SGD(params, lr=lr),
        hparams=hparams,
        run_opts={"device": "cpu"},
    )
    brain.init_optimizers()
    return brain


def learning_rate(brain):
    return brain.optimizer.param_groups[0]["lr"]


def test_warmup_ramps_linearly_to_the_scheduled_rate():
    brain = make_brain(warmup_steps=4)
    next(iter(brain.hparams.epoch_counter))  # epoch 1: scheduled rate 0.01
    seen = []
    for step in range(6):
        brain.optimizer_step = step
        brain.on_fit_batch_start(batch=None, should_step=True)
        seen.append(learning_rate(brain))
    assert seen == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_warmup_across_an_epoch_boundary_follows_the_epoch_schedule():
    brain = make_brain(warmup_steps=4)
    counter = iter(brain.hparams.epoch_counter)
    next(counter)
    next(counter)  # epoch 2: LinearScheduler(0.01 -> 0.001 over 3 epochs) gives 0.0055
    brain.optimizer_step = 2  # a run resumed in epoch 2, still warming up
    brain.on_fit_batch_start(batch=None, should_step=True)
    assert learning_rate(brain) == pytest.approx(0.0055 * 3 / 4)


@pytest.mark.parametrize("warmup_steps", [None, 0])
def test_no_warmup_leaves_the_rate_alone(warmup_steps):
    brain = make_brain(warmup_steps=warmup_steps)
    next(iter(brain.hparams.epoch_counter))
    brain.optimizer_step = 0
    brain.on_fit_batch_start(batch=None, should_step=True)
    assert learning_rate(brain) == pytest.approx(0.01)
