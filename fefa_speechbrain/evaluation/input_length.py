"""Old import path of :mod:`fefa_speechbrain.inference.input_length` (the same module object)."""

import sys

from fefa_speechbrain.inference import input_length as _module

sys.modules[__name__] = _module
