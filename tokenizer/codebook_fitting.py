"""Fit the codebooks of an `mdct` tokenizer: residual k-means on the gain-normalised MDCT bands of real EEG.

The mdct design has no trained network: its encoder is a fixed lapped transform, so the best codebooks for a
corpus are the k-means solutions of each band's residual, stage after stage (the training objective, the
time-domain squared error, equals the squared error on MDCT coefficients because the transform is orthogonal).
Lloyd's iterations on a few hundred thousand patches take minutes on a CPU, where gradient training of the
released design takes hours for a worse result (see the model card). `training.train_tokenizer` calls these for
mdct configs.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from .quantization import kmeans


@torch.no_grad()
def mdct_training_vectors(model, windows: Iterable[tuple[np.ndarray, int]], max_vectors: int, seed: int = 0) -> torch.Tensor:
    """Gain-normalised MDCT frames [N, P] of the real patches of `windows` ((input_values [C, T] µV,
    valid_samples) pairs), at most `max_vectors` of them drawn uniformly (seeded)."""
    patch = model.config.patch_size
    frames = []
    for values, valid_samples in windows:
        num_patches = int(valid_samples) // patch
        if num_patches == 0:
            continue
        signal = torch.as_tensor(np.asarray(values, dtype=np.float32)[:, : num_patches * patch])
        shapes, _ = model.mdct_shapes(model.transform(signal[None]))
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
    for (low, high), quantizer in zip(model._bands(), model.quantizers):
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
