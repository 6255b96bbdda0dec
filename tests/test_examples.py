"""Every script in examples/ runs end to end on tiny settings (subprocess, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(args: list[str]) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_quickstart(tmp_path):
    out = _run([str(EXAMPLES / "quickstart.py"), "--seconds", "2", "--out", str(tmp_path / "q_raw.fif")])
    assert "19 channels x 400 samples" in out
    assert (tmp_path / "q_raw.fif").is_file()


def test_tokenize_and_reconstruct(eeg_dir):
    out = _run([str(EXAMPLES / "tokenize_and_reconstruct.py"), str(eeg_dir / "eegmat" / "Subject00_1.edf"),
                "--seconds", "3"])
    assert "codes (1, 8, 2, 19, 3)" in out and "PCC" in out  # the bundled mdct tokenizer: 8 bands x 2 stages


def test_continue_recording(eeg_dir, tmp_path):
    out = _run([str(EXAMPLES / "continue_recording.py"), str(eeg_dir / "eegmat" / "Subject00_1.edf"),
                "--prompt-seconds", "2", "--seconds", "2", "--out", str(tmp_path / "c.edf")])
    assert "prompt 2 s + generated 2 s" in out
    assert (tmp_path / "c.edf").is_file()


def test_convert_checkpoint(parity_dir, tmp_path):
    out = _run([str(EXAMPLES / "convert_checkpoint.py"), str(parity_dir / "official_state_dict.safetensors"),
                "--output", str(tmp_path / "converted")])
    assert "converted to" in out
    assert (tmp_path / "converted" / "config.json").is_file()


def test_train_on_your_recordings(eeg_dir, tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name in ("Subject02_2.edf", "Subject03_2.edf", "Subject04_2.edf"):
        (recordings / name).symlink_to(eeg_dir / "eegmat" / name)
    configs = EXAMPLES.parent / "configs"
    out = _run([str(EXAMPLES / "train_on_your_recordings.py"), str(recordings), "--output", str(tmp_path / "run"),
                "--tokenizer-config", str(configs / "tokenizer" / "tiny-mdct.json"),
                "--lbm-config", str(configs / "lbm" / "tiny-depthwise.json"),
                "--tokenizer-steps", "2", "--lbm-steps", "2", "--batch-size", "2"])
    assert "sampled (19, 800)" in out
    assert (tmp_path / "run" / "tokenizer" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "lbm" / "model.safetensors").is_file()
