"""The recipe scripts of recipes/VoxCeleb/FEFA, imported as modules (their main block does not run)."""

import importlib.util
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb" / "FEFA"


def load_script(name):
    """The module of ``recipes/VoxCeleb/FEFA/<name>.py`` (imported once per session)."""
    key = f"fefa_recipe_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, RECIPE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
