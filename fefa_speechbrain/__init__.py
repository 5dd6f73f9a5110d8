"""fefa_speechbrain: Fine-grained Early Frequency Attention as SpeechBrain lobes.

Layout
------
Model lobes (tensors [batch, time, freq], relative lengths):

- ``features``: 257-bin spectrogram front-end, per-frame normalization, frame-exact lengths.
- ``fefa``: FEFA (single placement, on the input) and FEFA2d (multiple placement).
- ``placement``: length-carrying conv/pool layers and the FEFA placement shared by backbones.
- ``vggm``, ``thin_resnet``, ``thin_seresnet``: the paper's backbones.
- ``pooling``: temporal average pooling, GhostVLAD, attentive statistics pooling.
- ``wrapper``: FEFA in front of any SpeechBrain embedding model (ECAPA-TDNN, ResNet).
- ``classifier``: softmax / additive-angular-margin speaker head and loss.
- ``lengths``: relative/absolute length bookkeeping and masking.

Recipe support (used by ``recipes/VoxCeleb/FEFA``):

- ``data``: audio checks, atomic writes, corpus preparation, the synthetic demo corpus.
- ``dataio``, ``training``, ``checkpoints``, ``recipe``: the Brain loop and its data.
- ``inference``, ``verification``, ``metrics``: embeddings, scoring, EER/minDCF.
- ``noise``, ``robustness``, ``plotting``, ``export``: the paper's noise test, figures,
  and export to a SpeechBrain pretrained-model folder.
"""

__version__ = "0.1.0"
