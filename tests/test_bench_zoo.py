"""benchmarks/bench_zoo.py: the zoo table, the card's comparison and attention sentences,
and the RTF of a pretrained folder's ONNX graph (the shipped folder; no corpus needed)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_zoo  # noqa: E402

ROW = {"path": "pretrained/fefa-x", "backbone": "VGG-M", "aggregation": "TAP", "fefa": "single",
       "parameters": 1_501_962, "size_bytes": 3 * 2 ** 20, "test_eer": 0.1213,
       "test_min_dcf": 0.515, "persian_eer": 0.1724, "keep_noise20": 0.4333,
       "rtf": {"pytorch": 0.0052, "onnxruntime": 0.0018}}
PEER = {"path": "torchaudio MFCC", "test_eer": 0.2368, "test_min_dcf": 0.826,
        "persian_eer": 0.1872, "keep_noise20": 0.1833, "rtf": {"pytorch": 0.0003}}


def test_markdown_has_one_row_per_model_with_the_peer_cells_empty():
    result = {"command": "python bench_zoo.py", "machine": {"cpu": "CPU", "date": "2026-12-04"},
              "models": {"vggm": ROW, "MFCC mean+std": PEER}}
    text = bench_zoo.markdown(result)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # header and two models
    assert rows[1].split(" | ")[1:6] == ["VGG-M", "TAP", "FEFA(S)", "1.50 M", "3.1 MB"]
    assert "12.13 %" in rows[1] and "43 %" in rows[1] and "0.0018" in rows[1]
    assert rows[2].startswith("| MFCC mean+std | - | - | - | - | - | 23.68 %")
    assert rows[2].rstrip(" |").endswith("-")  # no ONNX Runtime figure for a peer


def test_versus_names_the_measures_each_way():
    ecapa = dict(ROW, test_eer=0.078, test_min_dcf=0.45, persian_eer=0.07, keep_noise20=0.62)
    assert "better on every quality measure" in bench_zoo.versus(ROW, ecapa)
    mixed = bench_zoo.versus(dict(ROW, keep_noise20=0.9, persian_eer=0.06), ecapa)
    assert "better on Persian EER, keep at 20 dB" in mixed
    assert "worse on test EER, minDCF" in mixed
    tied = bench_zoo.versus(dict(ROW, keep_noise20=0.62), ecapa)
    assert "equal on keep at 20 dB; worse on test EER, minDCF, Persian EER" in tied
    assert bench_zoo.versus(ROW, None) == ""


def test_attention_text_finds_the_extremes_and_band_means():
    mean = np.ones(257)
    mean[10] = 1.5   # 312.5 Hz
    mean[200] = 0.5  # 6250 Hz
    text = bench_zoo.attention_text(mean)
    assert text.startswith("highest 1.50 at 312 Hz, lowest 0.50 at 6250 Hz")
    assert "0-0.3 kHz 1.00" in text and "4-8 kHz " in text


def test_flag_reads_a_command_line_value_or_the_default():
    command = "python train.py x.yaml --batch_size=16 --augment=True"
    assert bench_zoo._flag(command, "batch_size") == "16"
    assert bench_zoo._flag(command, "augment", "False") == "True"
    assert bench_zoo._flag(command, "lr", "0.001") == "0.001"


def test_rtf_of_the_shipped_folder_in_pytorch_and_onnx_runtime(tmp_path):
    pytest.importorskip("onnxruntime")
    import bench_everyday

    folder = str(REPO / "pretrained" / "fefa-ecapa128-speechcommands")
    model = bench_everyday.OurModel("ecapa", folder)
    wav = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1
    rtf = bench_zoo.speeds([model], wav, repeats=1, scratch=str(tmp_path))
    assert set(rtf["ecapa"]) == {"pytorch", "onnxruntime"}
    assert all(0 < value < 5 for value in rtf["ecapa"].values())
    if not os.path.isfile(os.path.join(folder, bench_zoo.GRAPH)):  # exported for the run
        assert (tmp_path / "fefa-ecapa128-speechcommands.onnx").is_file()


def test_reflow_refills_paragraphs_and_keeps_the_rest():
    text = ("---\nlicense: cc-by-4.0\ntags:\n- x\n---\n\n# Title\n\n" + "word " * 40
            + "\n10 more\n\n1. first\n2. second\n\n```bash\nlong command " + "x" * 100 + "\n\nstill code\n```\n\n"
            "| a | b |\n|---|---|\n\n- item\n  continued\n")
    out = bench_zoo._reflow(text, width=50)
    lines = out.split("\n")
    assert lines[:5] == ["---", "license: cc-by-4.0", "tags:", "- x", "---"]
    start = lines.index("# Title") + 2
    body = lines[start:lines.index("", start)]
    assert len(body) > 1 and all(len(line) <= 50 for line in body)
    assert " ".join(body) == ("word " * 40).strip() + " 10 more"
    assert "1. first" in lines and "2. second" in lines
    assert "long command " + "x" * 100 in lines and "still code" in lines
    assert "| a | b |" in lines and "  continued" in lines
