"""Evaluation windows: rows of a prepared dataset (or bare arrays) -> `Window`s of EEG in microvolts.

A window is `[C, T]` (channels x samples) at the model's sampling rate; its first `valid_samples` samples of every
channel are real, the rest zero padding. `tokenizer.evaluation` and the reference codec (`tokenizer.dct_codec`) read
their inputs through `as_window` / `load_windows`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Iterable, Iterator, Sequence

import numpy as np


@dataclass
class Window:
    """One evaluation window.

    Attributes:
        input_values: [C, T] float32 microvolts; samples from `valid_samples` on are zero padding.
        valid_samples: number of real samples per channel.
        channel_names: the C vocabulary names.
    """

    input_values: np.ndarray
    valid_samples: int
    channel_names: list[str]

    @property
    def real(self) -> np.ndarray:
        """The real samples [C, valid_samples] (µV)."""
        return self.input_values[:, : self.valid_samples]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_values.shape)


def as_window(row: Any) -> Window:
    """A dataset row (dict with `input_values` [C][T], optional `valid_samples`, `channel_names`), a
    `Window`, or a bare array [C, T] (all samples real, no channel names) -> `Window`."""
    if isinstance(row, Window):
        return row
    if isinstance(row, Mapping):
        # rows may hold a 2-D array, an object array of channel arrays or nested lists: stack channel by channel
        values = np.stack([np.asarray(channel, dtype=np.float32) for channel in row["input_values"]])
        valid = row.get("valid_samples")
        names = row.get("channel_names")
        names = [] if names is None else [str(n) for n in names]
    else:
        values, valid, names = np.asarray(row, dtype=np.float32), None, []
    if values.ndim != 2:
        raise ValueError(f"a window must be [C, T] (channels x samples), got shape {values.shape}")
    valid = values.shape[1] if valid is None else int(valid)
    if not 0 < valid <= values.shape[1]:
        raise ValueError(f"valid_samples must be in [1, {values.shape[1]}], got {valid}")
    return Window(values, valid, names)


def load_windows(rows: Iterable[Any], max_windows: int | None = None) -> list[Window]:
    """The first `max_windows` (default all) rows of `rows` as `Window`s."""
    return [as_window(row) for row in islice(rows, max_windows)]


def shape_batches(windows: Sequence[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive windows of equal (C, T), in batches of at most `batch_size` (order kept)."""
    batch: list[Window] = []
    for window in windows:
        if batch and (len(batch) == batch_size or window.shape != batch[0].shape):
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


__all__ = ["Window", "as_window", "load_windows", "shape_batches"]
