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


def make_fefa_brain(multiplier, lr=0.01, lr_final=0.001, epochs=3):
    from fefa_speechbrain.lobes.wrapper import FEFAWrapper

    hparams = {
        "lr_annealing": LinearScheduler(lr, lr_final, epochs),
        "epoch_counter": EpochCounter(epochs),
        "lr_warmup_steps": 4,
        "fefa_lr_multiplier": multiplier,
    }
    class MeanLinear(torch.nn.Linear):  # [B, T, 6] -> [B, 1, 3]
        def forward(self, x, lengths=None):
            return super().forward(x.mean(1, keepdim=True))

    model = FEFAWrapper(MeanLinear(6, 3), n_bins=6, fefa="single")
    brain = SpeakerBrain(
        modules={"embedding_model": model, "classifier": torch.nn.Linear(3, 2)},
        opt_class=lambda params: torch.optim.Adam(params, lr=lr),
        hparams=hparams,
        run_opts={"device": "cpu"},
    )
    brain.init_optimizers()
    return brain, model


def test_fefa_parameters_train_at_their_multiple_of_the_rate():
    brain, model = make_fefa_brain(multiplier=10.0)
    groups = brain.optimizer.param_groups
    fefa_ids = {id(p) for p in model.input_fefa.parameters()}
    assert [len(g["params"]) for g in groups] == [4, len(fefa_ids)]
    assert {id(p) for p in groups[1]["params"]} == fefa_ids
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.1])
    next(iter(brain.hparams.epoch_counter))
    brain.optimizer_step = 1  # warm-up step 2 of 4 scales both groups alike
    brain.on_fit_batch_start(batch=None, should_step=True)
    assert [g["lr"] for g in groups] == pytest.approx([0.005, 0.05])
    # one Adam step moves FEFA's zero-initialized parameters by about 10x the others' step
    embeddings = brain.modules.embedding_model(torch.rand(4, 5, 6), torch.ones(4))
    loss = brain.modules.classifier(embeddings).logsumexp(-1).sum()
    loss.backward()
    before = [p.detach().clone() for p in model.input_fefa.parameters()]
    brain.optimizer.step()
    moved = max((p - b).abs().max().item() for p, b in zip(model.input_fefa.parameters(), before))
    assert moved == pytest.approx(0.05, rel=1e-3)


def test_fefa_multiplier_of_one_keeps_a_single_group():
    brain, _ = make_fefa_brain(multiplier=1.0)
    assert len(brain.optimizer.param_groups) == 1


def test_fefa_group_keeps_the_options_of_its_group_under_remove_vector_weight_decay():
    from fefa_speechbrain.lobes.wrapper import FEFAWrapper

    model = FEFAWrapper(torch.nn.Linear(6, 3), n_bins=6, fefa="single")
    brain = SpeakerBrain(
        modules={"embedding_model": model},
        opt_class=lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
        hparams={"fefa_lr_multiplier": 10.0},
        run_opts={"device": "cpu", "remove_vector_weight_decay": True},
    )
    brain.init_optimizers()
    fefa_ids = {id(p) for p in model.input_fefa.parameters()}
    fefa_groups = [g for g in brain.optimizer.param_groups if g.get("lr_scale") == 10.0]
    assert {id(p) for g in fefa_groups for p in g["params"]} == fefa_ids
    assert all(g["weight_decay"] == 0.0 and g["lr"] == pytest.approx(0.1) for g in fefa_groups)
    rest = [p for g in brain.optimizer.param_groups for p in g["params"] if id(p) not in fefa_ids]
    assert len(rest) == 2  # the linear layer's weight and bias, each once
