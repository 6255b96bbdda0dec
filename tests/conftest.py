"""Shared test fixtures: paths to ../shared (fixtures and real EEG) and small configs.

Tests that need ../shared (real recordings, the official parity fixture) are skipped, with the missing path as the
reason, on a clone without it, so `python -m pytest -q tests` passes there on what it can check. CI sets
`NEURORVQ_REQUIRE_SHARED=1` (`.ci/run`): then a missing folder fails those tests, and CI never goes green by
skipping them. `NEURORVQ_SHARED` points at another shared/ folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("NEURORVQ_SHARED", REPO_ROOT.parent / "shared"))
EEG_DIR = SHARED_DIR / "data" / "eeg"
PARITY_DIR = SHARED_DIR / "fixtures" / "official_parity"
REQUIRE_SHARED = os.environ.get("NEURORVQ_REQUIRE_SHARED", "").strip().lower() in {"1", "true", "yes", "on"}


def shared_path(path: Path, what: str) -> Path:
    """`path` (inside ../shared) if it exists; otherwise skip the calling test or fixture naming what is missing,
    or fail it when `NEURORVQ_REQUIRE_SHARED=1`."""
    if path.exists():
        return path
    message = f"{what} not found at {path} (set NEURORVQ_SHARED to the shared/ folder)"
    if REQUIRE_SHARED:
        pytest.fail(f"{message}; NEURORVQ_REQUIRE_SHARED=1 makes it an error")
    pytest.skip(message)


@pytest.fixture(scope="session")
def eeg_dir() -> Path:
    return shared_path(EEG_DIR, "real EEG (shared/data/eeg)")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return shared_path(PARITY_DIR, "the official parity fixture (shared/fixtures/official_parity)")


@pytest.fixture(scope="module")
def one_thread():
    """Torch single-threaded for a test module (tiny ops are dominated by thread-pool overhead on a shared 2-core
    machine); a module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_accelerate_state():
    """Each training run in the test process gets its own Accelerator settings (mixed precision, say)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
