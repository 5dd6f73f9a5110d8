"""speaker_verification.py without data_folder: --verification_file and --audio_root are enough."""

import os
import subprocess
import sys

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "VoxCeleb", "FEFA")
SHIPPED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "pretrained",
                                       "fefa-ecapa128-speechcommands"))


def verification(tmp_path, *extra):
    return subprocess.run(
        [sys.executable, "speaker_verification.py", "hparams/verification.yaml",
         f"--experiment_folder={SHIPPED}", f"--output_folder={tmp_path / 'out'}", *extra],
        cwd=RECIPE, capture_output=True, text=True, timeout=300,
    )


def test_trial_list_and_audio_root_without_data_folder(tmp_path):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 speaker1_down.flac speaker1_go.flac\n0 speaker1_down.flac speaker2_left.flac\n")
    result = verification(tmp_path, f"--verification_file={trials}",
                          f"--audio_root={SHIPPED}/example")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "EER 0.00%" in result.stdout and "(1 target / 1 non-target trials)" in result.stdout


def test_neither_data_folder_nor_list_is_one_clear_error(tmp_path):
    result = verification(tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "give --data_folder=<VoxCeleb1 test folder>, or --verification_file" in result.stderr
