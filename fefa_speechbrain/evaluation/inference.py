"""Old import path of :mod:`fefa_speechbrain.inference.embedder` (the same module object)."""

import sys

from fefa_speechbrain.inference import embedder as _module

sys.modules[__name__] = _module
