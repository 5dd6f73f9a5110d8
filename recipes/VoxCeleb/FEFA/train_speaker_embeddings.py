#!/usr/bin/env python3
"""Recipe for training speaker embeddings with FEFA (Hajavi & Etemad) on VoxCeleb.

One FEFA before the input (``--fefa=single``, default), FEFA at every depth where the
time-frequency map changes size (``--fefa=multi``), or none (``--fefa=none``); softmax
loss, Adam, initial learning rate 1e-4, batch 64, as in the paper.

To run:
    python train_speaker_embeddings.py hparams/train_thin_resnet34_gvlad.yaml \
        --data_folder=/data/voxceleb2,/data/voxceleb1 --verification_file=/data/veri_test2.txt
    torchrun --nproc_per_node=4 train_speaker_embeddings.py hparams/train_thin_resnet34_gvlad.yaml \
        --data_folder=... --precision=bf16
Your own data (<root>/<speaker>/[<session>/]<utt>.<ext>):
    python train_speaker_embeddings.py hparams/train_thin_resnet34_gvlad.yaml \
        --corpus=folder --data_folder=/data/my_speakers --verification_file=null \
        --n_test_speakers=20 --n_threshold_speakers=10
(--n_threshold_speakers: speakers also left out of training, whose trials,
prep_folder/threshold_trials.txt, export_pretrained.py sets its thresholds on)

Authors
 * fefa-speechbrain contributors
"""

import atexit
import functools
import logging
import os
import sys

import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.nnet.losses import classification_error
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.metric_stats import MetricStats
from torch.nn.parallel import DistributedDataParallel

from fefa_speechbrain.data.dataset import add_label_pipeline, speaker_dataset
from fefa_speechbrain.data.prepare import prepare_folder_corpus, prepare_voxceleb
from fefa_speechbrain.data.rir import ensure_rir_csv
from fefa_speechbrain.experiment import (
    CORPUS_FILES,
    ExperimentLock,
    check_batches,
    record_corpus,
    refuse_or_replace,
    rerun_differences,
    save_hyperparams,
)
from fefa_speechbrain.hparams import (
    add_override,
    count_speakers,
    load_hparams,
    parse_overrides,
    pop_override,
)
from fefa_speechbrain.lobes.features import embed_waveforms
from fefa_speechbrain.lobes.fefa import FEFA

logger = logging.getLogger(__name__)


def set_learning_rate(optimizer, lr):
    """Sets every parameter group's rate to ``lr`` times the group's ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class SpeakerBrain(sb.core.Brain):
    """Trains ``embedding_model`` + ``classifier`` to classify training speakers.

    The forward pass (features -> normalization -> embedding) is the one SpeechBrain's
    inference classes replay, so an exported model computes exactly what was trained.
    Optional hparams: ``lr_warmup_steps`` (linear warm-up of the first optimizer steps),
    ``fefa_lr_multiplier`` (FEFA's parameters train at this multiple of the rate),
    ``augment`` with ``augmenter`` (SpeechBrain's Augmenter over the ``augment_*``
    choices: speed, noise, babble, reverb, drop_freq), ``random_channel`` with
    ``channel_augment`` (a random recolouring of every training utterance).
    """

    def _augmenter(self, stage):
        if stage != sb.Stage.TRAIN or not getattr(self.hparams, "augment", False):
            return None
        return self.hparams.augmenter

    def _wrap_distributed(self):
        """Plain DDP on CPU (gloo): SpeechBrain 1.1.2 converts every BatchNorm to
        SyncBatchNorm under DDP, which PyTorch refuses on CPU modules."""
        if not (self.distributed_launch and self.device_type == "cpu"):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DistributedDataParallel(
                    module, device_ids=None, find_unused_parameters=self.find_unused_parameters
                )

    def init_optimizers(self):
        """SpeechBrain's optimizer, with FEFA's parameters moved into groups of their own
        that train at ``fefa_lr_multiplier`` times the scheduled rate (the paper is silent
        on FEFA's rate, and FEFA starts at the identity). Each FEFA group keeps the options
        of the group it came from (e.g. no weight decay under remove_vector_weight_decay)."""
        super().init_optimizers()
        multiplier = getattr(self.hparams, "fefa_lr_multiplier", 1.0)
        fefa = {id(p) for m in self.modules.modules() if isinstance(m, FEFA) for p in m.parameters()}
        if self.opt_class is None or multiplier == 1.0 or not fefa:
            return
        for group in list(self.optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in fefa]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in fefa]
                options = {key: value for key, value in group.items() if key != "params"}
                self.optimizer.add_param_group(dict(options, params=moved, lr_scale=multiplier))
        set_learning_rate(self.optimizer, self.optimizer.defaults["lr"])

    def on_fit_batch_start(self, batch, should_step):
        """Linear learning-rate warm-up: step ``k`` (0-based) of the first
        ``lr_warmup_steps`` uses ``(k + 1) / lr_warmup_steps`` of the epoch's scheduled
        rate. The step counter is checkpointed by the Brain, so a resumed run continues the
        warm-up where it stopped. SpeechBrain's ``LinearWarmupScheduler`` is not used: it
        owns the whole per-step schedule, whereas this keeps every yaml's per-epoch
        ``lr_annealing`` and only scales its first steps."""
        warmup = getattr(self.hparams, "lr_warmup_steps", 0) or 0
        if self.optimizer_step >= warmup:
            return
        scheduled, _ = self.hparams.lr_annealing(self.hparams.epoch_counter.current)
        # Set directly: SpeechBrain's update_learning_rate logs every change, once a step.
        set_learning_rate(self.optimizer, scheduled * (self.optimizer_step + 1) / warmup)

    def compute_forward(self, batch, stage):
        """Waveforms -> speaker logits."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN and getattr(self.hparams, "random_channel", False):
            wavs = self.hparams.channel_augment(wavs, lens)
        augment = self._augmenter(stage)
        if augment is not None:
            wavs, lens = augment(wavs, lens)
        embeddings = embed_waveforms(self.modules, wavs, lens)
        return self.modules.classifier(embeddings), lens

    def compute_objectives(self, predictions, batch, stage):
        """Speaker classification loss over the items whose audio could be read."""
        predictions, lens = predictions
        spkid, _ = batch.spk_id_encoded
        ok = torch.as_tensor(batch.audio_ok, device=predictions.device, dtype=torch.bool)
        augment = self._augmenter(stage)
        if augment is not None:
            spkid = augment.replicate_labels(spkid)
            ok = augment.replicate_labels(ok)
        if not bool(ok.any()):
            return predictions.sum() * 0.0
        loss = self.hparams.compute_cost(predictions[ok], spkid[ok], lens[ok])
        if stage != sb.Stage.TRAIN:
            ids = [uid for uid, good in zip(batch.id, ok.tolist()) if good]
            self.error_metrics.append(ids, predictions[ok], spkid[ok], lens[ok])
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Resets the validation error counter."""
        if stage != sb.Stage.TRAIN:
            self.error_metrics = MetricStats(
                metric=functools.partial(classification_error, reduction="batch")
            )

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals the learning rate, and checkpoints after validation."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["ErrorRate"] = self.error_metrics.summarize("average")
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing(epoch)
            set_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"ErrorRate": stats["ErrorRate"]}, min_keys=["ErrorRate"]
            )


def dataio_prep(hparams):
    """Train and valid datasets (random / first crops of ``sentence_len`` seconds of the
    prepared chunks) and the speaker label encoder, created once on the main process."""
    train_data = speaker_dataset(
        hparams["train_annotation"],
        crop_seconds=hparams["sentence_len"],
        sample_rate=hparams["sample_rate"],
        data_root=hparams["data_folder"],
    )
    valid_data = speaker_dataset(
        hparams["valid_annotation"],
        crop_seconds=hparams["sentence_len"],
        sample_rate=hparams["sample_rate"],
        data_root=hparams["data_folder"],
        random_crop=False,
    )
    label_encoder = CategoricalEncoder()
    lab_enc_file = f"{hparams['save_folder']}/label_encoder.txt"
    run_on_main(
        label_encoder.load_or_create,
        kwargs={"path": lab_enc_file, "from_didatasets": [train_data], "output_key": "spk_id"},
    )
    label_encoder.load_if_possible(lab_enc_file)
    add_label_pipeline([train_data, valid_data], label_encoder)
    for dataset in (train_data, valid_data):
        dataset.set_output_keys(["id", "sig", "audio_ok", "spk_id_encoded"])
    return train_data, valid_data, label_encoder


def prepare_data(hparams):
    """The data preparation the hparams ask for (idempotent): VoxCeleb or a speaker folder
    (with ``n_threshold_speakers``, ``threshold_trials.txt`` of speakers left out of training)."""
    options = dict(
        save_folder=hparams["prep_folder"],
        verification_file=hparams["verification_file"],
        split_ratio=hparams["split_ratio"],
        seg_dur=hparams["seg_dur"],
        check_audio=hparams["check_audio"],
        n_jobs=hparams["prep_jobs"],
        seed=hparams["seed"],
    )
    if hparams["corpus"] == "voxceleb":
        if hparams["n_threshold_speakers"]:
            logger.warning(
                "n_threshold_speakers=%s is for corpus=folder; VoxCeleb keeps its own protocol "
                "(set thresholds with export_pretrained.py --threshold_trials)",
                hparams["n_threshold_speakers"],
            )
        return prepare_voxceleb(hparams["data_folder"], **options)
    return prepare_folder_corpus(
        hparams["data_folder"],
        test_speakers=hparams["test_speakers"],
        n_test_speakers=hparams["n_test_speakers"],
        n_threshold_speakers=hparams["n_threshold_speakers"],
        **options,
    )


def load_training_hparams(hparams_file, overrides=None, overwrite=False):
    """Checks the hparams, claims the output folder, prepares the data, sizes the classifier.

    In this order, so that a mistake fails in seconds and nothing of an earlier
    experiment is touched: every value is checked (one message listing every problem)
    before any module is built; the output folder is locked for the whole run; a rerun
    into a folder that holds another experiment (other identity values, see
    :data:`fefa_speechbrain.experiment.RESUMABLE_KEYS`) is refused before the
    preparation, and once prepared, one on another corpus or speaker set; ``overwrite``
    moves such an experiment aside instead. Every stage must have a batch. Unless
    ``n_speakers`` is given, it is counted in the training CSV. Returns the hparams and
    the overrides actually applied (saved with the experiment).
    """
    hparams = load_hparams(hparams_file, overrides)  # checks every value first
    output_folder = hparams["output_folder"]
    if if_main_process():
        lock = ExperimentLock(output_folder).acquire()
        atexit.register(lock.release)
        if not overwrite:
            differences = rerun_differences(output_folder, hparams_file, overrides)
            refuse_or_replace(output_folder, differences, False)
    if not hparams["skip_prep"]:
        run_on_main(prepare_data, kwargs={"hparams": hparams})
    n_speakers = count_speakers(hparams["train_annotation"])
    if "n_speakers" not in parse_overrides(overrides) and hparams["n_speakers"] != n_speakers:
        overrides = add_override(overrides, "n_speakers", n_speakers)
        hparams = load_hparams(hparams_file, overrides)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    check_batches(
        "train", hparams["train_annotation"], hparams["train_dataloader_options"], world_size
    )
    check_batches(
        "valid", hparams["valid_annotation"], hparams["valid_dataloader_options"], world_size
    )
    if if_main_process():
        annotations = {key: hparams[key] for key in CORPUS_FILES}
        label_file = os.path.join(hparams["save_folder"], "label_encoder.txt")
        differences = rerun_differences(
            output_folder, hparams_file, overrides, annotations, label_file
        )
        if refuse_or_replace(output_folder, differences, overwrite):
            os.makedirs(hparams["save_folder"], exist_ok=True)  # moved aside with the rest
    return hparams, overrides


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    overwrite, overrides = pop_override(overrides, "overwrite")
    sb.utils.distributed.ddp_init_group(run_opts)

    # Checks, the output folder's lock, data preparation (main process), then the
    # classifier sized to the training speakers
    hparams, overrides = load_training_hparams(hparams_file, overrides, bool(overwrite))
    # hyperparams.yaml written atomically (SpeechBrain's own copy is a plain write,
    # which a full disk leaves truncated), then the rest of SpeechBrain's set-up
    run_on_main(save_hyperparams, args=[hparams_file, hparams["output_folder"], overrides])
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=None,
        overrides=overrides,
    )
    annotations = {key: hparams[key] for key in CORPUS_FILES}
    run_on_main(record_corpus, args=[hparams["output_folder"], annotations])
    if hparams["augment"] and hparams["augment_reverb"]:
        # the RIR corpus given, or statistical room responses in the prep folder
        run_on_main(ensure_rir_csv, args=[hparams["rir_csv"], hparams["prep_folder"]],
                    kwargs={"sample_rate": hparams["sample_rate"]})
    train_data, valid_data, label_encoder = dataio_prep(hparams)

    speaker_brain = SpeakerBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    speaker_brain.fit(
        speaker_brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=hparams["valid_dataloader_options"],
    )
    if torch.distributed.is_initialized():
        # left alive, gloo's worker threads can abort a finished process at exit (SIGABRT)
        torch.distributed.destroy_process_group()
