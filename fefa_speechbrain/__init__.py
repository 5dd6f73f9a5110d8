"""fefa_speechbrain: Fine-grained Early Frequency Attention as SpeechBrain lobes.

- ``lobes``: the models (FEFA, features, masked layers, backbones, pooling, wrapper,
  classifier, augmentation); tensors [batch, time, features] with relative lengths.
- ``data``: audio checks, corpus preparation, trial lists, datasets, the synthetic corpus.
- ``inference``: using a model: loading it, embeddings, voice activity, diarization,
  the gallery of enrolled speakers.
- ``evaluation``: verification, metrics, thresholds, noise robustness, FEFA's attention.
- ``hparams``, ``checkpoints``, ``atomic``, ``checks``: recipe support.
- ``export`` (SpeechBrain pretrained-model folders) and ``plotting`` (figures only).

The recipe (Brain subclass, data pipeline) is in ``recipes/VoxCeleb/FEFA``;
``docs/design.md`` follows the data from wav to score.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from fefa_speechbrain.log_filters import silence_torchvision_warning

__version__ = "0.1.0"

silence_torchvision_warning()  # figures are saved with matplotlib, not torchvision

# Module paths before the lobes/ data/ evaluation/ layout: yamls of experiments trained
# and folders exported earlier name them (``!new:fefa_speechbrain.vggm.VGGM``).
_MOVED = {
    **{name: f"lobes.{name}" for name in (
        "fefa", "features", "lengths", "pooling", "vggm", "thin_resnet", "thin_seresnet",
        "wrapper", "classifier", "augment")},
    **{name: f"evaluation.{name}" for name in (
        "inference", "verification", "metrics", "robustness", "noise")},
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``fefa_speechbrain.<old name>`` as the module it became."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix == __name__ and name in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module):
        pass


sys.meta_path.append(_MovedModules())
