"""Shared test fixtures: paths to ../shared (fixtures and real EEG) and small configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("NEURORVQ_SHARED", REPO_ROOT.parent / "shared"))
EEG_DIR = SHARED_DIR / "data" / "eeg"
PARITY_DIR = SHARED_DIR / "fixtures" / "official_parity"


@pytest.fixture(scope="session")
def eeg_dir() -> Path:
    if not EEG_DIR.is_dir():
        pytest.fail(f"real EEG not found at {EEG_DIR}; set NEURORVQ_SHARED to the shared/ folder")
    return EEG_DIR


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY_DIR.is_dir():
        pytest.fail(f"parity fixture not found at {PARITY_DIR}; set NEURORVQ_SHARED to the shared/ folder")
    return PARITY_DIR


@pytest.fixture
def fresh_accelerate_state():
    """Each training run in the test process gets its own Accelerator settings (mixed precision, say)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
