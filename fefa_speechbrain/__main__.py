"""``python -m fefa_speechbrain``: the command line (see :mod:`fefa_speechbrain.cli`)."""

from fefa_speechbrain.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
