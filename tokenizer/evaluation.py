"""Evaluate a NeuroRVQ tokenizer: reconstruction fidelity against rate, next to a DCT transform codec.

Every signal here is EEG in **microvolts** at the model's sampling rate (200 Hz), as arrays `[C, T]`
(channels x samples). A window's first `valid_samples` samples of every channel are real, the rest zero
padding; all metrics use real samples only.

`evaluate_tokenizer` encodes the windows once, decodes them with the first k = 1..K residual stages, and scores them
with the metrics of `tokenizer.metrics` (z-scored MSE, PCC, band NMSE, amplitude and seam ratios, codebook usage).
Rate is reported in bits per channel-second of real signal. The reference is `tokenizer.dct_codec.DCTCodec`: per
channel, per one-second block, an orthonormal DCT-II, a uniform quantiser and an ideal entropy coder (empirical
entropy per DCT coefficient index, estimated on the evaluation set itself, so the code tables are free).

Entry points: `evaluate_tokenizer`, `reconstruct_windows`; the report (`plot_evaluation`, `format_table`) is in
`tokenizer.evaluation_plots`, the windows in `tokenizer.windows`. Every name that used to live here (metrics, codec,
windows, report) can still be imported from here.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .dct_codec import DCTCodec, dct_rate_distortion
from .metrics import FidelityAccumulator, code_histogram, codebook_usage, seam_ratio, zscored_mse
from .windows import Window, load_windows, shape_batches

# re-exported: names importable from here before the windows, metrics, codec and report moved out
from .configuration_neurorvq import PATCH_SIZE, SAMPLING_RATE  # noqa: F401
from .dct_codec import dct_at_rate, dct_codec  # noqa: F401
from .evaluation_plots import format_table, plot_evaluation  # noqa: F401
from .metrics import (  # noqa: F401
    BAND_FILTER_ORDER,
    BANDS,
    BLOCK_SIZE,
    FLAT_STD,
    ZSCORE_VAR_EPS,
    amplitude_ratio,
    band_errors,
    band_nmse,
    band_pass,
    pearson_correlation,
    zscore,
)
from .windows import as_window  # noqa: F401


# ----------------------------------------------------------------------------------------------------
# The tokenizer
# ----------------------------------------------------------------------------------------------------


def tokenizer_bits_per_channel_second(config, num_quantizers: int, num_channels: int, valid_samples: int) -> float:
    """Bits per real channel-second the tokenizer spends on one window, side information included.

    Only patches holding real samples are counted (padding patches need not be sent); the bits of a
    partly real last patch are charged to the real seconds.
    """
    patches = math.ceil(valid_samples / config.patch_size)
    per_channel_second = config.bits_per_channel_second(num_quantizers=num_quantizers, num_channels=num_channels,
                                                        num_patches=patches)
    window_bits = per_channel_second * num_channels * patches * config.patch_size / config.sampling_rate
    return window_bits / (num_channels * valid_samples / config.sampling_rate)


def _encode_batch(model, batch: list[Window]):
    """Encode a batch of equal-shape windows with all stages; returns the encoder output."""
    values = torch.from_numpy(np.stack([w.input_values for w in batch]))
    padding_mask = None
    if any(w.valid_samples < w.input_values.shape[1] for w in batch):
        padding_mask = torch.zeros(values.shape, dtype=torch.long)
        for i, window in enumerate(batch):
            padding_mask[i, :, : window.valid_samples] = 1
    return model.encode(values, [w.channel_names for w in batch], padding_mask=padding_mask)


def _decode_stages(model, encoded, batch: list[Window], num_quantizers: int) -> np.ndarray:
    """Decode the first `num_quantizers` stages of `encoded` -> [B, C, T] float64 µV.

    Residual quantisation is greedy stage by stage, so encoding with k stages gives the first k stages of
    the full codes: one encode serves every k.
    """
    reconstruction = model.decode(
        encoded.codes[:, :, :num_quantizers], [w.channel_names for w in batch],
        log_amplitude_mean=encoded.log_amplitude_mean, log_amplitude_std=encoded.log_amplitude_std,
        scale_codes=encoded.scale_codes, patch_mask=encoded.patch_mask,
    )
    return reconstruction.detach().float().cpu().numpy().astype(np.float64)


class _EvalMode:
    """Run the model in eval mode (a training-mode quantizer would update its codebooks), then restore."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def reconstruct_windows(model, windows: Sequence[Window], batch_size: int = 16,
                        num_quantizers: int | None = None) -> list[np.ndarray]:
    """Tokenizer reconstructions [C, T] (µV) of `windows`, with the first `num_quantizers` stages (default all)."""
    k = num_quantizers or model.config.num_quantizers
    out = []
    with _EvalMode(model):
        for batch in shape_batches(windows, batch_size):
            out.extend(_decode_stages(model, _encode_batch(model, batch), batch, k))
    return out


def evaluate_tokenizer(model, rows: Iterable[Any], batch_size: int = 16, max_windows: int | None = None,
                       progress: bool = True, dct_rates: Sequence[float] | None = None) -> dict[str, Any]:
    """Fidelity, rate and codebook use of a NeuroRVQ tokenizer on prepared windows, next to a DCT codec.

    Args:
        model: a `NeuroRVQTokenizer` (run in eval mode; its training mode is restored afterwards).
        rows: dataset rows (`datasets.Dataset`, numpy-formatted or not, or a list of dicts) with
            `input_values` [C][T] µV at the model's rate, `valid_samples` and `channel_names`.
        batch_size: windows per model call (consecutive windows of equal shape are batched).
        max_windows: evaluate only the first windows.
        progress: show a tqdm bar.
        dct_rates: bits/channel-second of the DCT rate-distortion points (default: the tokenizer's rates
            for k = 1..K stages, so both curves share their rates).

    Returns:
        JSON-serialisable dict:
        - `num_windows`, `num_channel_seconds`, `num_quantizers` (K), `num_scales` (S), `codebook_size`;
        - at K stages: `bits_per_channel_second` (mean over windows, side information included),
          `zscored_mse`, `pcc`, `band_nmse` {band: NMSE}, `codebook_usage` and `codebook_perplexity`
          ([S][K] lists);
        - `amplitude_ratio`, `seam_ratio` of the reconstructions, and `original_seam_ratio` (the input's own);
        - `rate_distortion`: for k = 1..K, {num_quantizers, bits_per_channel_second, zscored_mse};
        - `dct`: the reference codec at the tokenizer's full rate (step, bits_per_channel_second,
          zscored_mse, pcc, band_nmse);
        - `dct_rate_distortion`: reference-codec {step, bits_per_channel_second, zscored_mse} at `dct_rates`.
    """
    config = model.config
    windows = load_windows(rows, max_windows)
    if not windows:
        raise ValueError("no window to evaluate")
    stages, scales = config.num_quantizers, config.num_scales
    full = FidelityAccumulator(config.sampling_rate, config.patch_size)
    stage_mse: list[list[float]] = [[] for _ in range(stages)]
    stage_bits: list[list[float]] = [[] for _ in range(stages)]
    histogram = np.zeros((scales, stages, config.codebook_size), dtype=np.int64)

    with _EvalMode(model), tqdm(total=len(windows), desc="evaluating tokenizer", unit="window",
                                disable=not progress) as bar:
        for batch in shape_batches(windows, batch_size):
            encoded = _encode_batch(model, batch)
            histogram += code_histogram(encoded.codes, config.codebook_size, encoded.patch_mask)
            for k in range(1, stages + 1):
                reconstructions = _decode_stages(model, encoded, batch, k)
                for window, reconstruction in zip(batch, reconstructions):
                    valid, channels = window.valid_samples, window.input_values.shape[0]
                    stage_mse[k - 1].append(zscored_mse(window.input_values, reconstruction, valid))
                    stage_bits[k - 1].append(tokenizer_bits_per_channel_second(config, k, channels, valid))
                    if k == stages:
                        full.add(window.input_values, reconstruction, valid)
            bar.update(len(batch))

    usage, perplexity = codebook_usage(histogram)
    rate_distortion = [
        {"num_quantizers": k + 1, "bits_per_channel_second": float(np.mean(stage_bits[k])),
         "zscored_mse": float(np.mean(stage_mse[k]))}
        for k in range(stages)
    ]
    full_rate = rate_distortion[-1]["bits_per_channel_second"]

    codec = DCTCodec(windows, block_size=config.patch_size, sampling_rate=config.sampling_rate)
    originals = [w.real for w in windows]
    rates = list(dct_rates) if dct_rates is not None else [p["bits_per_channel_second"] for p in rate_distortion]
    dct_points = dct_rate_distortion(windows, [codec.step_for_rate(r) for r in rates], codec=codec)
    return {
        "num_windows": len(windows),
        "num_channel_seconds": float(codec.channel_seconds.sum()),
        "num_quantizers": stages,
        "num_scales": scales,
        "codebook_size": config.codebook_size,
        "bits_per_channel_second": full_rate,
        **full.summary(),
        "codebook_usage": usage.tolist(),
        "codebook_perplexity": perplexity.tolist(),
        "original_seam_ratio": float(np.nanmedian([seam_ratio(x, config.patch_size) for x in originals])),
        "rate_distortion": rate_distortion,
        "dct": codec.evaluate(codec.step_for_rate(full_rate), originals),
        "dct_rate_distortion": dct_points,
    }


__all__ = [
    "BANDS",
    "DCTCodec",
    "FidelityAccumulator",
    "Window",
    "as_window",
    "band_errors",
    "band_nmse",
    "amplitude_ratio",
    "band_pass",
    "code_histogram",
    "codebook_usage",
    "dct_at_rate",
    "dct_codec",
    "dct_rate_distortion",
    "evaluate_tokenizer",
    "format_table",
    "load_windows",
    "pearson_correlation",
    "plot_evaluation",
    "reconstruct_windows",
    "seam_ratio",
    "shape_batches",
    "tokenizer_bits_per_channel_second",
    "zscore",
    "zscored_mse",
]
