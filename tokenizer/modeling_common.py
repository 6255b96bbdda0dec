"""What both token designs of the NeuroRVQ tokenizer share: outputs, masked statistics, the scale-token grid,
the quantizers and the checks of codes and scale codes.

Shapes: B windows, C channels, A one-second patches per channel (P = `patch_size` samples each), N = C * A token
positions (channel-major), S scales, K residual stages. Signals are microvolts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from transformers.utils import ModelOutput

from .quantization import ResidualVectorQuantizer

# ----------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------


@dataclass
class NeuroRVQEncoderOutput(ModelOutput):
    """Output of [`NeuroRVQTokenizer.encode`].

    Args:
        codes (`torch.LongTensor` [B, S, K, C, A]): code per (scale, stage, channel, patch).
        log_amplitude_mean (`torch.FloatTensor`): mean of log1p|FFT| of the microvolt patches: [B] over each
            window's real patches (`window_statistics`), or [B, C, A] per patch, as the scale tokens encode
            it (`scale_tokens`). With `log_amplitude_std`, what decoding to microvolts needs. The mdct design:
            the natural log of the slow coefficients' RMS gain [B, C, A], as its first scale token encodes it.
        log_amplitude_std (`torch.FloatTensor`): its standard deviation (unbiased), same shape. The mdct design:
            the log gain of the fast coefficients.
        scale_codes (`torch.LongTensor` [B, 2, C, A]): with `scale_tokens`, the quantised (mean, std) per
            patch; `decode` needs nothing else.
        patch_mask (`torch.BoolTensor` [B, C, A]): True where a patch holds real data.
        quantized (`torch.FloatTensor` [B, S, C, A, code_dim]): the quantised vectors (mdct: [B, 1, C, A,
            patch_size], the dequantised gain-normalised frames).
    """

    codes: torch.LongTensor | None = None
    log_amplitude_mean: torch.FloatTensor | None = None
    log_amplitude_std: torch.FloatTensor | None = None
    scale_codes: torch.LongTensor | None = None
    patch_mask: torch.BoolTensor | None = None
    quantized: torch.FloatTensor | None = None


@dataclass
class NeuroRVQSpectrumOutput(ModelOutput):
    """Decoder heads of the released design, per patch: [B, C, A, patch_size] each.

    Args:
        log_amplitude: z-scored log1p|FFT| (window statistics removed).
        phase_sin, phase_cos: sin and cos of the FFT phase (tanh outputs, not exactly unit norm).
    """

    log_amplitude: torch.FloatTensor | None = None
    phase_sin: torch.FloatTensor | None = None
    phase_cos: torch.FloatTensor | None = None


@dataclass
class NeuroRVQOutput(ModelOutput):
    """Output of [`NeuroRVQTokenizer.forward`].

    Args:
        loss: quantizer + log-amplitude + phase + time-domain terms, each weighted by the config.
        quantizer_loss, amplitude_loss, phase_loss, time_loss: the terms (unweighted).
        difference_loss: `mdct` design: mean squared error of the sample-to-sample steps of the z-scored
            reconstruction (unweighted; in `loss` with `config.difference_loss_weight`).
        reconstruction (`[B, C, T]`): decoded EEG in microvolts.
        zscored_input, zscored_reconstruction (`[B, C, T]`): both z-scored per window (the paper's metric
            is the MSE between them, `time_loss`).
        codes (`[B, S, K, C, A]`): codes.
        scale_codes (`[B, 2, C, A]`): amplitude scale tokens (`scale_tokens` side information only).
        codebook_usage, codebook_perplexity (`[S, K]`): fraction of codes used and exp(entropy) of the code
            histogram in this batch, per scale and stage.
        spectrum: the released decoder's [`NeuroRVQSpectrumOutput`].
    """

    loss: torch.FloatTensor | None = None
    quantizer_loss: torch.FloatTensor | None = None
    amplitude_loss: torch.FloatTensor | None = None
    phase_loss: torch.FloatTensor | None = None
    time_loss: torch.FloatTensor | None = None
    difference_loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    zscored_input: torch.FloatTensor | None = None
    zscored_reconstruction: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    scale_codes: torch.LongTensor | None = None
    codebook_usage: torch.FloatTensor | None = None
    codebook_perplexity: torch.FloatTensor | None = None
    spectrum: NeuroRVQSpectrumOutput | None = None


# ----------------------------------------------------------------------------------------------------
# Statistics over the real tokens of masked windows
# ----------------------------------------------------------------------------------------------------


def masked_standardize(x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-8):
    """Z-score every window of `x` [B, N, P] over its real tokens (`mask` [B, N], True = real).

    Returns `(z, mean [B], std [B])` with the unbiased variance clamped at `eps`, as released.
    """
    if mask is None:
        mean = x.mean(dim=(1, 2))
        var = x.var(dim=(1, 2))
    else:
        weights = mask.unsqueeze(-1).to(x.dtype).expand_as(x)
        count = weights.sum(dim=(1, 2))
        mean = (x * weights).sum(dim=(1, 2)) / count
        var = (((x - mean[:, None, None]) ** 2) * weights).sum(dim=(1, 2)) / (count - 1).clamp(min=1)
    std = var.clamp(min=eps).sqrt()
    return (x - mean[:, None, None]) / std[:, None, None], mean, std


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` [B, N, ...] over real tokens (`mask` [B, N])."""
    if mask is None:
        return values.mean()
    weights = mask.reshape(*mask.shape, *([1] * (values.dim() - mask.dim()))).to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp(min=1)


# ----------------------------------------------------------------------------------------------------
# Scale tokens: two amplitude values per patch on a uniform grid
# ----------------------------------------------------------------------------------------------------


def quantize_scales(values: Sequence[torch.Tensor], ranges: Sequence[tuple[float, float]],
                    num_levels: int) -> torch.LongTensor:
    """Two per-patch values (each [B, ...]) -> scale codes [B, 2, ...]: value i clamped to `ranges[i]` = (low,
    high) and rounded to the nearest of `num_levels` uniform levels."""
    levels = num_levels - 1
    codes = [torch.round((v.clamp(low, high) - low) / (high - low) * levels).long() for v, (low, high) in zip(values, ranges)]
    return torch.stack(codes, dim=1)


def dequantize_scales(scale_codes: torch.LongTensor, ranges: Sequence[tuple[float, float]],
                      num_levels: int) -> list[torch.Tensor]:
    """Scale codes [B, 2, ...] -> the two values [B, ...] at their levels (the inverse of `quantize_scales`)."""
    levels = num_levels - 1
    return [low + scale_codes[:, i].float() * (high - low) / levels for i, (low, high) in enumerate(ranges)]


# ----------------------------------------------------------------------------------------------------
# Parts and checks both designs use
# ----------------------------------------------------------------------------------------------------


def build_quantizers(config, code_dims: Sequence[int]) -> nn.ModuleList:
    """One [`ResidualVectorQuantizer`] per scale (state-dict keys `quantizers.{s}.stages.{k}.*`), of dimension
    `code_dims[s]`."""
    return nn.ModuleList(
        ResidualVectorQuantizer(
            config.num_quantizers, config.codebook_size, code_dim, config.quantizer_type,
            config.ema_decay, config.kmeans_iters, config.commitment_weight, config.codebook_weight,
            config.dead_code_threshold,
        )
        for code_dim in code_dims
    )


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first weight or buffer (an mdct tokenizer may hold buffers only)."""
    return next(iter(module.state_dict().values())).device


def check_scale_codes(scale_codes, shape: tuple[int, int, int, int], num_levels: int,
                      device: torch.device) -> torch.LongTensor:
    """Scale codes as a tensor on `device`, after checking their shape [B, 2, C, A] and range [0, num_levels)."""
    scale_codes = torch.as_tensor(scale_codes, device=device)
    if tuple(scale_codes.shape) != tuple(shape):
        raise ValueError(f"scale_codes must have shape {tuple(shape)}, got {tuple(scale_codes.shape)}")
    if scale_codes.is_floating_point() or scale_codes.min() < 0 or scale_codes.max() >= num_levels:
        raise ValueError(f"scale_codes must be integers in [0, {num_levels})")
    return scale_codes


def check_chunk_patches(chunk_patches) -> None:
    """`decode(chunk_patches=...)`: a positive int or None, whichever the design (only the mdct design chunks)."""
    if chunk_patches is not None and (isinstance(chunk_patches, bool) or not isinstance(chunk_patches, int)
                                      or chunk_patches < 1):
        raise ValueError(f"chunk_patches must be a positive int (patches per decoded chunk) or None, "
                         f"got {chunk_patches!r}")
