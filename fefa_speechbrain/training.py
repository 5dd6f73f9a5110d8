"""Speaker-embedding training with SpeechBrain's Brain loop.

The forward pass is the one SpeechBrain's inference classes replay, so an exported model
computes exactly what was trained::

    feats = compute_features(wavs)            # Spectrogram: [B, T, 257]
    lens = feature_lengths(...)               # frame-exact relative lengths
    feats = mean_var_norm(feats, lens)        # FrameNormalization
    emb = embedding_model(feats, lens)        # backbone with FEFA: [B, 1, D]
    logits = classifier(emb)                  # SpeakerClassifier: [B, 1, n_speakers]

Everything else comes from SpeechBrain: DDP through torchrun, ``--precision`` for mixed
precision, checkpoints and resume through the Checkpointer (``--ckpt_interval_minutes``
for intra-epoch checkpoints), augmentation through SpeechBrain's ``Augmenter``
(``augment: True``).
"""

import functools

import speechbrain as sb
import torch
from torch.nn.parallel import DistributedDataParallel
from speechbrain.utils.metric_stats import MetricStats
from speechbrain.nnet.losses import classification_error

from fefa_speechbrain.features import feature_lengths


class SpeakerBrain(sb.core.Brain):
    """Trains ``embedding_model`` + ``classifier`` to classify training speakers.

    hparams used: ``compute_cost``, ``lr_annealing`` (per epoch), ``lr_warmup_steps``
    (optional, default 0: a linear warm-up of the learning rate over the first optimizer
    steps, from ``1/lr_warmup_steps`` of the scheduled value to all of it), ``train_logger``,
    ``augment`` (bool) with ``augmenter`` (a SpeechBrain ``Augmenter``), and
    ``random_channel`` (bool) with ``channel_augment`` (a
    :class:`fefa_speechbrain.augment.RandomChannel`, applied in place to every training
    batch, before the ``Augmenter``).
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
        for group in self.optimizer.param_groups:
            group["lr"] = scheduled * (self.optimizer_step + 1) / warmup

    def compute_forward(self, batch, stage):
        """Waveforms -> speaker logits."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN and getattr(self.hparams, "random_channel", False):
            wavs = self.hparams.channel_augment(wavs, lens)
        augment = self._augmenter(stage)
        if augment is not None:
            wavs, lens = augment(wavs, lens)
        feats = self.modules.compute_features(wavs)
        feat_lens = feature_lengths(self.modules.compute_features, lens, wavs.shape[1])
        feats = self.modules.mean_var_norm(feats, feat_lens)
        embeddings = self.modules.embedding_model(feats, feat_lens)
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
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"ErrorRate": stats["ErrorRate"]}, min_keys=["ErrorRate"]
            )
