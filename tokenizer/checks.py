"""Plausibility checks of what users hand to the tokenizer: dtype, units (microvolts), flat channels, empty codes.

Hooks (called by `NeuroRVQTokenizer`):
- `check_input_values(input_values, padding_mask, channel_names)` at the start of `_check_input` (encode and
  the training forward): float64 / float16 / bfloat16 tensors (and numpy arrays) become float32; input whose
  typical channel is a thousand times quieter than EEG (Volts given where microvolts are expected) is a
  `ValueError` naming the unit; very loud input (nanovolts, ADC counts) and flat channels are warned about.
- `check_codes_not_empty(codes)` in `_check_codes` (decode): an empty batch, channel or time axis is a
  `ValueError` instead of a failure inside `min()`.
- `check_config_fields(config, ...)`: the field checks of `NeuroRVQConfig.validate` and of each token design's own
  fields (`design_released.validate_config`, `design_mdct.validate_config`): a `ValueError` naming the field.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

# Channel standard deviations in microvolts. Scalp EEG after the released band-pass has a std of roughly
# 1-100 µV; the same EEG in Volts has ~1e-5. The limits leave three orders of magnitude on each side.
VOLTS_STD = 0.05  # below: the input is (almost certainly) in Volts
LOUD_STD = 5000.0  # above: nanovolts or raw ADC counts, or µV data converted twice
FLAT_STD = 1e-6  # a channel this constant carries no signal


class UnitWarning(UserWarning):
    """The amplitude of the EEG is implausible for the unit the model expects (microvolts)."""


class SignalQualityWarning(UserWarning):
    """Flat, clipped or saturated channels, or a truncated recording."""


def channel_std(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Standard deviation of every (window, channel) over its real samples -> [B, C] (NaN without real samples)."""
    x = x.detach().float().cpu()
    if padding_mask is None or tuple(padding_mask.shape) != tuple(x.shape):
        return x.std(dim=-1, unbiased=False)
    mask = padding_mask.detach().cpu().bool().float()
    count = mask.sum(dim=-1)
    mean = (x * mask).sum(dim=-1) / count.clamp(min=1)
    var = (((x - mean[..., None]) * mask) ** 2).sum(dim=-1) / count.clamp(min=1)
    return torch.where(count > 0, var.sqrt(), torch.full_like(var, float("nan")))


def check_input_values(input_values, padding_mask=None, channel_names=None):
    """Convert the dtype of `input_values` [B, C, T] to float32 and check that it looks like EEG in microvolts.

    Returns the (converted) tensor; leaves shape errors, NaN and the like to the caller's own checks.
    """
    if isinstance(input_values, np.ndarray) and np.issubdtype(input_values.dtype, np.floating):
        input_values = torch.from_numpy(np.ascontiguousarray(input_values, dtype=np.float32))
    if not isinstance(input_values, torch.Tensor) or not input_values.is_floating_point():
        return input_values
    if input_values.dtype != torch.float32:
        input_values = input_values.float()  # float64 / float16 / bfloat16: the model computes in float32
    if input_values.dim() != 3 or input_values.numel() == 0 or not torch.isfinite(input_values).all():
        return input_values
    std = channel_std(input_values, padding_mask)
    std = std[~torch.isnan(std)]
    if std.numel() == 0:
        return input_values
    live = std[std > FLAT_STD]
    if live.numel() == 0:
        warnings.warn("every channel of input_values is flat (constant): there is no EEG to tokenize, and the "
                      "reconstruction metrics are undefined; check the recording and its units", SignalQualityWarning,
                      stacklevel=3)
        return input_values
    typical = float(live.median())
    if typical < VOLTS_STD:
        raise ValueError(
            f"input_values look like Volts, not microvolts: the median channel std is {typical:.3g}, while EEG in "
            "microvolts has 1-100. The tokenizer expects microvolts: multiply by 1e6 (NeuroRVQFeatureExtractor "
            "converts MNE recordings and Volt arrays itself)")
    if typical > LOUD_STD:
        warnings.warn(f"input_values have a median channel std of {typical:.3g} µV, far above EEG's 1-100 µV: are "
                      "they nanovolts, raw ADC counts, or microvolts multiplied by 1e6 twice? The tokenizer expects "
                      "microvolts", UnitWarning, stacklevel=3)
    flat = (channel_std(input_values, padding_mask) <= FLAT_STD).any(dim=0)  # flat in some window
    if bool(flat.any()):
        where = flat.nonzero().flatten().tolist()
        names = [channel_names[i] for i in where] if _names_list(channel_names, input_values.shape[1]) else where
        warnings.warn(f"flat (constant) channel(s) {names} in input_values: they carry no EEG and decode to noise; "
                      "drop them or check the electrodes", SignalQualityWarning, stacklevel=3)
    return input_values


def _names_list(channel_names, num_channels: int) -> bool:
    return (isinstance(channel_names, (list, tuple)) and len(channel_names) == num_channels
            and all(isinstance(n, str) for n in channel_names))


def check_codes_not_empty(codes) -> None:
    """Codes [B, S, K, C, A] with an empty batch, channel or time axis cannot be decoded."""
    if isinstance(codes, torch.Tensor) and codes.dim() == 5 and 0 in (codes.shape[0], codes.shape[3], codes.shape[4]):
        raise ValueError(f"codes have an empty axis (shape {tuple(codes.shape)} = [B, S, K, C, A]): decode needs at "
                         "least one window, one channel and one patch (A >= 1 second)")


def check_config_fields(config, positive_ints=(), positive=(), non_negative=(), ranges=()) -> None:
    """`ValueError` naming the first field of `config` that is not a positive integer (`positive_ints`), a number
    > 0 (`positive`), a number >= 0 (`non_negative`), or a `[low, high]` pair with low < high (`ranges`)."""
    where = type(config).__name__
    for name in positive_ints:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{where}.{name} must be a positive integer, got {value!r}")
    for name in positive:
        if not float(getattr(config, name)) > 0:
            raise ValueError(f"{where}.{name} must be > 0, got {getattr(config, name)!r}")
    for name in non_negative:
        if not float(getattr(config, name)) >= 0:
            raise ValueError(f"{where}.{name} must be >= 0, got {getattr(config, name)!r}")
    for name in ranges:
        low_high = getattr(config, name)
        if len(low_high) != 2 or not float(low_high[0]) < float(low_high[1]):
            raise ValueError(f"{where}.{name} must be [low, high] with low < high, got {low_high!r}")


__all__ = ["FLAT_STD", "channel_std", "LOUD_STD", "SignalQualityWarning", "UnitWarning", "VOLTS_STD", "check_codes_not_empty",
           "check_config_fields", "check_input_values"]
