"""Old import path of :mod:`fefa_speechbrain.inference.model_source` (the same module object)."""

import sys

from fefa_speechbrain.inference import model_source as _module

sys.modules[__name__] = _module
