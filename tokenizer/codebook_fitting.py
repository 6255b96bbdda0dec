"""Fit the codebooks of an `mdct` tokenizer: residual k-means on the gain-normalised MDCT bands of real EEG.

The mdct design has no trained network: its encoder is a fixed lapped transform, so the best codebooks for a
corpus are the k-means solutions of each band's residual, stage after stage (the training objective, the
time-domain squared error, equals the squared error on MDCT coefficients because the transform is orthogonal).
Lloyd's iterations on a few hundred thousand patches take minutes on a CPU, where gradient training of the
released design takes hours for a worse result (see the model card). `training.train_tokenizer` calls these for
mdct configs.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from .quantization import kmeans


@torch.no_grad()
def mdct_training_vectors(model, windows: Iterable[tuple[np.ndarray, int]], max_vectors: int, seed: int = 0) -> torch.Tensor:
    """Gain-normalised MDCT frames [N, P] of the real patches of `windows` ((input_values [C, T] µV,
    valid_samples) pairs), at most `max_vectors` of them drawn uniformly (seeded)."""
    patch, design = model.config.patch_size, model.design
    frames = []
    for values, valid_samples in windows:
        num_patches = int(valid_samples) // patch
        if num_patches == 0:
            continue
        signal = torch.as_tensor(np.asarray(values, dtype=np.float32)[:, : num_patches * patch])
        shapes, _ = design.mdct_shapes(design.transform(signal[None]))
        frames.append(shapes.reshape(-1, patch))
    if not frames:
        raise ValueError("no window holds a whole real patch: nothing to fit the codebooks on")
    vectors = torch.cat(frames)
    if len(vectors) > max_vectors:
        generator = torch.Generator().manual_seed(seed)
        vectors = vectors[torch.randperm(len(vectors), generator=generator)[:max_vectors]]
    return vectors


@torch.no_grad()
def fit_mdct_codebooks(model, vectors: torch.Tensor, num_iters: int = 20, seed: int = 0) -> list[list[float]]:
    """Residual k-means, band by band and stage by stage, on gain-normalised MDCT frames `vectors` [N, P].

    Writes every stage's codebook (and its EMA statistics, so training mode continues from it) and returns
    the mean squared residual after each stage, per band: [S][K] (in units of the normalised coefficients).
    """
    if model.config.token_design != "mdct":
        raise ValueError("fit_mdct_codebooks needs a tokenizer with token_design='mdct'")
    generator = torch.Generator().manual_seed(seed)
    errors = []
    for (low, high), quantizer in zip(model.design.bands(), model.quantizers):
        residual = vectors[:, low:high].float().clone()
        band_errors = []
        for stage in quantizer.stages:
            means, counts = kmeans(residual, stage.codebook_size, num_iters, use_cosine=False, generator=generator)
            stage.codebook.copy_(means)
            stage.ema_count.copy_(counts)
            stage.ema_sum.copy_(means * counts[:, None])
            stage.usage.copy_(counts / counts.sum() * len(counts))  # mean usage 1
            stage.initialized.fill_(1.0)
            residual -= means[stage.nearest(residual)]
            band_errors.append(float(residual.pow(2).sum(dim=1).mean()))
        errors.append(band_errors)
    return errors


@torch.no_grad()
def fit_noise_filling(model, windows: Iterable[tuple[np.ndarray, int, list[str]]]) -> dict:
    """Fit `config.noise_filling_levels` of an mdct tokenizer on real EEG, and write them into `model.config`.

    `windows`: (input_values [C, T] µV, valid_samples, channel_names) triples. Every real patch is encoded and
    decoded (codebooks and refiner, gain-normalised frames). Per band b, the level is what brings the mean log band
    power of the decoded frames to that of the real ones, exp(E[log P_real,b] - E[log P_decoded,b]) - 1 (band
    powers in dB are what decoding should keep), shared among the band's coefficients in proportion to their mean
    squared residual. Returns {"frames", "lost_db_per_band" (mean decoded minus real band power, dB),
    "levels_per_band" (band means)}.
    """
    if model.config.token_design != "mdct":
        raise ValueError("fit_noise_filling needs a tokenizer with token_design='mdct'")
    patch, design = model.config.patch_size, model.design
    bands = design.bands()
    residual_power = torch.zeros(patch, dtype=torch.float64)
    log_real, log_decoded = torch.zeros(len(bands), dtype=torch.float64), torch.zeros(len(bands), dtype=torch.float64)
    counts = torch.zeros(len(bands), dtype=torch.float64)
    frames = 0
    for values, valid_samples, channel_names in windows:
        num_patches = int(valid_samples) // patch
        if num_patches == 0:
            continue
        signal = torch.as_tensor(np.asarray(values, dtype=np.float32)[None, :, : num_patches * patch], device=model.device)
        shapes, scale_codes = design.mdct_shapes(design.transform(signal))  # [1, C, A, P]
        log_gains = torch.stack(design.dequantize_scales(scale_codes), dim=-1)
        channel_indices = model.channel_indices(list(channel_names), 1, signal.shape[1])
        decoded = design.refined_shapes(design.band_shapes(design.band_codes(shapes)), log_gains, channel_indices, None)
        shapes, decoded = shapes.reshape(-1, patch).double().cpu(), decoded.reshape(-1, patch).double().cpu()
        residual_power += (shapes - decoded).pow(2).sum(0)
        frames += len(shapes)
        for b, (low, high) in enumerate(bands):
            real, kept = shapes[:, low:high].pow(2).mean(-1), decoded[:, low:high].pow(2).mean(-1)
            live = (real > 1e-12) & (kept > 1e-12)
            log_real[b] += real[live].log().sum()
            log_decoded[b] += kept[live].log().sum()
            counts[b] += live.sum()
    if frames == 0:
        raise ValueError("no window holds a whole real patch: nothing to fit the noise filling on")
    levels = torch.zeros(patch, dtype=torch.float64)
    lost_db, band_levels = [], []
    for b, (low, high) in enumerate(bands):
        gap = float((log_real[b] - log_decoded[b]) / counts[b]) if counts[b] else 0.0  # natural log of a power ratio
        band_level = max(math.exp(gap) - 1.0, 0.0)
        profile = residual_power[low:high] / residual_power[low:high].mean().clamp(min=1e-30)
        levels[low:high] = band_level * profile
        lost_db.append(-10 * gap / math.log(10))
        band_levels.append(band_level)
    model.config.noise_filling_levels = [float(f"{v:.5g}") for v in levels.tolist()]
    return {"frames": frames, "lost_db_per_band": lost_db, "levels_per_band": band_levels}
