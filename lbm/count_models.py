"""Count models of LBM codes: the baselines an LBM's code NLL must beat (compare with `lbm.training.validation_nll`).

Each is fitted on training rows and scored on validation rows of a code dataset (`lbm.data`), on real patches only
(`valid_patches`), per stream (stream order of `lbm.layout`):

- `unigram_nll`: one code distribution per stream;
- `bigram_nll`: P(code at (patch a, channel c) | code of the same stream at (a - 1, c)), i.e. the same channel one
  second earlier; the first patch of a window falls back to the unigram;
- `count_baselines`: the unigram, both one-context models (previous channel, previous second) and their
  interpolation (`COUNT_MODELS`).

Add-one (Laplace) smoothing; results in bits per code (mean over every scored code) and bits per position (bits
per code x M streams), the units of `validation_nll`. Imports no model.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from .layout import codes_to_positions

COUNT_MODELS = ("unigram", "previous_channel", "previous_second", "interpolated")


def row_streams(row: dict) -> np.ndarray:
    """The codes of one code row's real patches, per position: `[A_valid, C, M]` int64.

    `row` has `codes` [S][K][C][A], `scale_codes` [2][C][A] or empty, `valid_patches`; the stream order is
    `lbm.layout`'s (scale streams first, then (s, k) scale-major), patches beyond `valid_patches` are dropped.
    """
    codes = torch.as_tensor(np.asarray(row["codes"], dtype=np.int64))
    if codes.dim() != 4:
        raise ValueError(f"row codes must be [S][K][C][A], got shape {tuple(codes.shape)}")
    scale = np.asarray(row.get("scale_codes", []), dtype=np.int64)
    scale_codes = torch.as_tensor(scale)[None] if scale.size else None
    positions = codes_to_positions(codes[None], scale_codes)[0]  # [A*C, M], time-major
    _, _, channels, patches = codes.shape
    streams = positions.reshape(patches, channels, -1).numpy()
    return streams[: max(0, min(int(row["valid_patches"]), patches))]


def _checked_streams(row: dict, vocab_sizes: np.ndarray) -> np.ndarray:
    """`row_streams(row)` after checking the number of streams and every code's range."""
    streams = row_streams(row)
    if streams.shape[-1] != len(vocab_sizes):
        raise ValueError(f"rows have {streams.shape[-1]} streams but {len(vocab_sizes)} stream_vocab_sizes were given")
    if streams.size and ((streams < 0).any() or (streams >= vocab_sizes).any()):
        raise ValueError("a code lies outside its stream's vocabulary")
    return streams


def _nll_summary(bits: np.ndarray, codes: np.ndarray) -> dict:
    """Per-stream total bits [M] and scored code counts [M] -> the baseline's result dict."""
    total_codes = int(codes.sum())
    if total_codes == 0:
        raise ValueError("no real validation patch to score")
    bits_per_code = float(bits.sum() / total_codes)
    return {"bits_per_code": bits_per_code, "bits_per_position": bits_per_code * len(codes),
            "bits_per_stream": (bits / np.maximum(codes, 1)).tolist(),
            "num_codes": total_codes, "num_positions": total_codes // len(codes)}


def unigram_nll(train_rows: Iterable[dict], validation_rows: Iterable[dict], stream_vocab_sizes: Sequence[int]) -> dict:
    """Add-one unigram baseline: one code distribution per stream, fitted on train rows.

    Args:
        train_rows, validation_rows: code rows (`lbm.data`), e.g. `load_codes(path, split)`.
        stream_vocab_sizes: codes per stream, `CodeLayout.stream_vocab_sizes` ([M]).

    Returns:
        dict with `bits_per_code` (mean -log2 p over every real validation code), `bits_per_position`
        (bits_per_code x M), `bits_per_stream` ([M]), `num_codes`, `num_positions`.
    """
    sizes = np.asarray(stream_vocab_sizes, dtype=np.int64)
    model = _CountModel(_concatenated(_row_arrays(train_rows, sizes), sizes), sizes)
    target = _validation_codes(validation_rows, sizes)[0]
    return _nll_summary(-np.log2(model.unigram_probability(target)).sum(0), np.full(len(sizes), len(target)))


def _row_arrays(rows: Iterable[dict], sizes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per row, its real positions as arrays [N_row, M]: the codes, the same stream's code one second earlier on
    the same channel (previous second) and on the previous channel of the same second (previous channel); -1
    where there is none (first patch of a window, first channel of a patch)."""
    parts = []
    for row in rows:
        streams = _checked_streams(row, sizes)  # [A, C, M] (A = 0 for a row without real patches)
        none = np.full((1, *streams.shape[1:]), -1, dtype=streams.dtype)
        previous_second = np.concatenate((none, streams[:-1]))[: len(streams)]
        previous_channel = np.concatenate((none[:, :1].repeat(len(streams), 0), streams[:, :-1]), 1)
        parts.append(tuple(x.reshape(-1, len(sizes)) for x in (streams, previous_second, previous_channel)))
    return parts


def _concatenated(parts: list, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_row_arrays` parts joined: (codes, previous_second, previous_channel), each [N, M]."""
    if not parts:
        empty = np.zeros((0, len(sizes)), dtype=np.int64)
        return empty, empty, empty
    return tuple(np.concatenate(column) for column in zip(*parts))


def _validation_codes(rows: Iterable[dict], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = _concatenated(_row_arrays(rows, sizes), sizes)
    if not len(arrays[0]):
        raise ValueError("no real validation patch to score")
    return arrays


class _CountModel:
    """Per-stream code counts, unconditional and conditioned on a context code of the same stream."""

    def __init__(self, arrays: tuple[np.ndarray, np.ndarray, np.ndarray], sizes: np.ndarray):
        """`arrays`: (codes, previous_second, previous_channel) [N, M] of the training positions."""
        codes, previous_second, previous_channel = arrays
        contexts = {"previous_channel": previous_channel, "previous_second": previous_second}
        self.sizes = sizes
        self.offsets = np.cumsum(sizes) - sizes  # stream m's codes start at offsets[m]
        self.pair_offsets = np.cumsum(sizes ** 2) - sizes ** 2
        self.unigram = np.bincount((self.offsets + codes).ravel(), minlength=int(sizes.sum())).astype(np.float64)
        self.pairs, self.context_totals = {}, {}
        for name, context in contexts.items():
            seen = context >= 0
            index = (self.pair_offsets + np.maximum(context, 0) * sizes + codes)[seen]
            self.pairs[name] = np.bincount(index, minlength=int((sizes ** 2).sum())).astype(np.float64)
            self.context_totals[name] = np.bincount((self.offsets + np.maximum(context, 0))[seen],
                                                    minlength=int(sizes.sum())).astype(np.float64)

    def unigram_probability(self, codes: np.ndarray) -> np.ndarray:
        """Add-one unigram p(code) [N, M]."""
        totals = np.add.reduceat(self.unigram, self.offsets)
        return (self.unigram[self.offsets + codes] + 1.0) / (totals + self.sizes)

    def conditional_probability(self, name: str, codes: np.ndarray, context: np.ndarray, add: float) -> np.ndarray:
        """p(code | context code) [N, M] with add-`add` smoothing (NaN where there is no context)."""
        safe = np.maximum(context, 0)
        count = self.pairs[name][self.pair_offsets + safe * self.sizes + codes]
        total = self.context_totals[name][self.offsets + safe]
        with np.errstate(invalid="ignore", divide="ignore"):
            probability = (count + add) / (total + add * self.sizes)
        return np.where(context >= 0, probability, np.nan)


def _mixture_weights(candidates: np.ndarray, iterations: int = 50) -> np.ndarray:
    """EM weights of a mixture of fixed predictors: candidates [N, J] (probabilities of the observed codes,
    NaN = predictor unavailable, then its weight is shared among the others) -> weights [J]."""
    weights = np.full(candidates.shape[1], 1.0 / candidates.shape[1])
    available = ~np.isnan(candidates)
    values = np.nan_to_num(candidates)
    for _ in range(iterations):
        joint = values * weights * available
        responsibility = joint / joint.sum(1, keepdims=True).clip(min=1e-300)
        weights = responsibility.sum(0) / len(responsibility)
    return weights


def _mixture_probability(candidates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    available = ~np.isnan(candidates)
    scale = (weights * available).sum(1)
    return (np.nan_to_num(candidates) * weights * available).sum(1) / scale


def count_baselines(train_rows: Iterable[dict], validation_rows: Iterable[dict], stream_vocab_sizes: Sequence[int],
                    heldout_fraction: float = 0.1) -> dict:
    """The count models an LBM must beat, fitted on train rows and scored on validation rows:

    - `unigram`: add-one p(code) per stream;
    - `previous_channel`: add-one p(code | the same stream's code on the previous channel of the same second);
    - `previous_second`: add-one p(code | the same stream's code on the same channel one second earlier);
    - `interpolated`: per stream, a mixture of the unigram and the two conditional models (maximum-likelihood
      counts, so a pair seen often dominates), its weights fitted by EM on the last `heldout_fraction` of the
      train rows with counts from the rest, then applied with counts from all train rows.

    A position without a context (first channel or first second) is scored by the unigram in the conditional
    models and by the available predictors in the mixture. Each result has the keys of [`unigram_nll`].
    """
    sizes = np.asarray(stream_vocab_sizes, dtype=np.int64)
    parts = _row_arrays(train_rows, sizes)  # read once; the mixture weights use a held-out slice of it
    validation = _validation_codes(validation_rows, sizes)

    def predictors(model: _CountModel, arrays) -> list[np.ndarray]:
        target, second, channel = arrays
        return [model.unigram_probability(target), model.conditional_probability("previous_channel", target, channel, 0.0),
                model.conditional_probability("previous_second", target, second, 0.0)]

    # mixture weights on held-out train rows, per stream
    split = max(1, int(round(len(parts) * (1 - heldout_fraction))))
    heldout_arrays = _concatenated(parts[split:], sizes)
    heldout = None
    if len(heldout_arrays[0]):
        heldout = np.stack(predictors(_CountModel(_concatenated(parts[:split], sizes), sizes), heldout_arrays), -1)
    weights = np.array([_mixture_weights(heldout[:, m]) if heldout is not None else np.full(3, 1 / 3)
                        for m in range(len(sizes))])  # [M, 3]

    model = _CountModel(_concatenated(parts, sizes), sizes)
    target, second, channel = validation
    unigram = model.unigram_probability(target)
    results = {"unigram": unigram}
    for name, context in (("previous_channel", channel), ("previous_second", second)):
        conditional = model.conditional_probability(name, target, context, 1.0)
        results[name] = np.where(np.isnan(conditional), unigram, conditional)
    candidates = np.stack(predictors(model, validation), -1)  # [N, M, 3]
    results["interpolated"] = np.stack([_mixture_probability(candidates[:, m], weights[m]) for m in range(len(sizes))], 1)
    counts = np.full(len(sizes), len(target), dtype=np.int64)
    summary = {name: _nll_summary(-np.log2(p).sum(0), counts) for name, p in results.items()}
    summary["interpolated"]["weights"] = weights.tolist()
    return summary


def bigram_nll(train_rows: Iterable[dict], validation_rows: Iterable[dict], stream_vocab_sizes: Sequence[int]) -> dict:
    """Add-one bigram baseline: per stream, P(code(a, c) | code(a - 1, c)) of the same stream and channel (the
    `previous_second` model of [`count_baselines`]). The first patch of every validation window is scored with
    the (add-one) unigram. Same arguments and result keys as [`unigram_nll`]."""
    sizes = np.asarray(stream_vocab_sizes, dtype=np.int64)
    model = _CountModel(_concatenated(_row_arrays(train_rows, sizes), sizes), sizes)
    target, second, _ = _validation_codes(validation_rows, sizes)
    conditional = model.conditional_probability("previous_second", target, second, 1.0)
    probability = np.where(np.isnan(conditional), model.unigram_probability(target), conditional)
    return _nll_summary(-np.log2(probability).sum(0), np.full(len(sizes), len(target)))


__all__ = ["COUNT_MODELS", "bigram_nll", "count_baselines", "row_streams", "unigram_nll"]
