"""Silences SpeechBrain's "torchvision is not available - cannot save figures" warning.

``speechbrain.utils.train_logger`` logs it when the module is imported (its
``ProgressSampleLogger`` would save images with torchvision), which happens in every
process that loads a recipe yaml (``FileTrainLogger``): the demo printed it four times.
The package saves its figures with matplotlib (:mod:`fefa_speechbrain.plotting`) and uses
no ``ProgressSampleLogger``, so the warning says nothing true about it. Only that
message is dropped; the logger's other records pass.
"""

import logging

TRAIN_LOGGER = "speechbrain.utils.train_logger"
TORCHVISION_MESSAGE = "torchvision is not available - cannot save figures"


class _DropTorchvisionWarning(logging.Filter):
    def filter(self, record):
        return record.getMessage() != TORCHVISION_MESSAGE


def silence_torchvision_warning():
    """Installs the filter on SpeechBrain's train_logger logger (once).

    Example
    -------
    >>> silence_torchvision_warning()
    >>> logger = logging.getLogger(TRAIN_LOGGER)
    >>> sum(isinstance(f, _DropTorchvisionWarning) for f in logger.filters)
    1
    """
    logger = logging.getLogger(TRAIN_LOGGER)
    if not any(isinstance(existing, _DropTorchvisionWarning) for existing in logger.filters):
        logger.addFilter(_DropTorchvisionWarning())
