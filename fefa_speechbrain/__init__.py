"""fefa_speechbrain: Fine-grained Early Frequency Attention as SpeechBrain lobes.

Layout
------
- ``features``: 257-bin spectrogram front-end and per-frame normalization.
- ``fefa``: the FEFA module (single placement) and FEFA2d (multiple placement).
- ``lengths``: relative/absolute length bookkeeping and masking shared by all models.
"""

__version__ = "0.1.0"
