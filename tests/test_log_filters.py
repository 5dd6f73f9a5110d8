"""SpeechBrain's torchvision warning is not printed once fefa_speechbrain is imported."""

import subprocess
import sys


def test_torchvision_warning_silenced():
    code = ("import logging; logging.basicConfig(); import fefa_speechbrain; "
            "import speechbrain.utils.train_logger as t; t.logger.warning('other message')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torchvision is not available" not in result.stderr
    assert "other message" in result.stderr
