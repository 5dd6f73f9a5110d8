"""Old import path of :mod:`fefa_speechbrain.inference.embedding_files` (the same module object)."""

import sys

from fefa_speechbrain.inference import embedding_files as _module

sys.modules[__name__] = _module
