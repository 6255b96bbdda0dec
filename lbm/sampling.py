"""Sampling controls of LBM generation (temperature, top_k, top_p, seeds, counts; a model's own defaults) and the
decoding of its samples.

Hook: `LBMForCausalLM.generate` calls `check_sampling_controls(temperature, top_k, top_p)`; the
`eeg-generation` pipeline and the CLI call all of these before any work.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Sequence

import torch

# The pipeline's and the CLI's default, with the bundled model's `stream_temperature_scales` (gain streams x 0.625,
# the 30-100 Hz band's codes x 0.75) and noise-filled decoding: see the bundle's model card for the measurements.
DEFAULT_TEMPERATURE = 0.8
# Above this temperature the code distribution is practically uniform: samples are noise, not EEG.
MAX_TEMPERATURE = 100.0
# Above this, samples drift far from real EEG (band power +10 dB and more on the bundled model): warn.
HIGH_TEMPERATURE = 2.0
_SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a number (0 = greedy, default {DEFAULT_TEMPERATURE}), got {temperature!r}")
    value = float(temperature)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"temperature must be finite and >= 0 (0 = greedy, default {DEFAULT_TEMPERATURE}), got {temperature!r}")
    if value > MAX_TEMPERATURE:
        raise ValueError(f"temperature {value:g} is absurd: above {MAX_TEMPERATURE:g} every code is equally likely and "
                         f"the output is noise, not EEG; use a value around 0.5-1 (default {DEFAULT_TEMPERATURE})")
    if value > HIGH_TEMPERATURE:
        warnings.warn(f"temperature {value:g} is far above 1: samples approach uniform codes and unrealistic EEG "
                      f"(default {DEFAULT_TEMPERATURE})", UserWarning, stacklevel=3)
    return value


def check_top_k(top_k):
    if top_k is None:
        return None
    if not _is_int(top_k) or int(top_k) < 1:
        raise ValueError(f"top_k must be an integer >= 1 (or None), got {top_k!r}")
    return int(top_k)


def check_number(name: str, value, low: float = 0.0, high: float = math.inf, low_open: bool = False,
                 note: str = "") -> float:
    """`value` as a float if it is a finite real number in [low, high] (low excluded with `low_open`), else a
    `ValueError` naming `name`, the range and `note` (what a value means, e.g. "1 = off")."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and (low < number if low_open else low <= number) and number <= high):
        bounds = (f"a number in {'(' if low_open else '['}{low:g}, {high:g}]" if math.isfinite(high)
                  else f"a finite number {'>' if low_open else '>='} {low:g}")
        raise ValueError(f"{name} must be {bounds}{f' ({note})' if note else ''}, got {value!r}")
    return number


def check_top_p(top_p):
    return None if top_p is None else check_number("top_p", top_p, 0.0, 1.0, low_open=True, note="or None")


def check_sampling_controls(temperature, top_k=None, top_p=None) -> tuple[float, int | None, float | None]:
    """Validated (temperature, top_k, top_p); `ValueError` saying the allowed range otherwise."""
    return check_temperature(temperature), check_top_k(top_k), check_top_p(top_p)


def check_seed(seed) -> int | None:
    """An integer seed (Python or numpy integer of any size) -> a value `torch.Generator.manual_seed` accepts.

    Seeds inside torch's range are used as given (same seed, same output as before); larger ones are reduced
    modulo 2**64.
    """
    if seed is None:
        return None
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer (or None), got {seed!r}")
    value = int(seed)
    if not _SEED_RANGE[0] <= value <= _SEED_RANGE[1]:
        value %= 2**64
    return value


def check_count(name: str, value, minimum: int = 1) -> int:
    """A positive integer count (Python or numpy integer, or an integral float)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_stream_temperatures(lbm_config, temperatures) -> list[float]:
    """One valid temperature per stream of `lbm_config`'s layout, or a `ValueError` naming the streams."""
    temperatures = list(temperatures)
    names = lbm_config.code_layout.stream_names
    if len(temperatures) != len(names):
        raise ValueError(f"stream_temperatures must give one temperature per stream ({len(names)}: "
                         f"{', '.join(names)}), got {len(temperatures)}")
    return [check_temperature(t) for t in temperatures]


# Sampling options only a model with a generation config (the spatial LBM) takes.
GENERATION_CONFIG_OPTIONS = ("num_rounds", "unmasking", "choice_temperature", "last_round_temperature_scale")


def has_generation_config(model) -> bool:
    """Whether `model.generate` reads its sampling defaults from `model.generation_config` (the spatial LBM)."""
    return getattr(getattr(model, "generation_config", None), "num_rounds", None) is not None


def default_temperature(model) -> float:
    """The temperature a call without one samples at: the model's generation config's, else `DEFAULT_TEMPERATURE`."""
    return float(model.generation_config.temperature) if has_generation_config(model) else DEFAULT_TEMPERATURE


def generation_kwargs(model, **options) -> dict:
    """The sampling keywords of one `model.generate` call: the options given (None = not given). A model with a
    generation config fills the rest from it; for the others the temperature defaults to `DEFAULT_TEMPERATURE`, and
    options they do not know (`GENERATION_CONFIG_OPTIONS`) are an error."""
    given = {name: value for name, value in options.items() if value is not None}
    if has_generation_config(model):
        return given
    unknown = sorted(set(given) & set(GENERATION_CONFIG_OPTIONS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: only a spatial LBM (parallel rounds) takes these; "
                         f"{type(model).__name__} samples code by code")
    given.setdefault("temperature", DEFAULT_TEMPERATURE)
    return given


NOISE_FILLING = ("independent", "coherent", "off")


def decoding_noise(model) -> str:
    """How `model`'s samples are decoded: its generation config's `noise_filling` (a spatial LBM's choice, measured
    by the realism report), else "independent" (noise filling as the depth-wise bundle was measured with)."""
    value = getattr(getattr(model, "generation_config", None), "noise_filling", None) or "independent"
    if value not in NOISE_FILLING:
        raise ValueError(f"generation_config.noise_filling must be one of {NOISE_FILLING}, got {value!r}")
    return value


def decode_generated(tokenizer, generated: dict, channel_names: Sequence[str], generator: torch.Generator | None = None,
                     prompt_patches: int = 0, noise_filling: str = "independent") -> torch.Tensor:
    """LBM output (`codes`, `scale_codes`) -> EEG [B, C, A * 200] µV, decoded for realism: unit phase vectors
    (released design); noise filling of the generated patches (mdct design with fitted levels; a real prompt's
    first `prompt_patches` decode as themselves): `noise_filling` "independent" (per channel), "coherent" (with the
    decoded bands' inter-channel correlation) or "off"."""
    if noise_filling not in NOISE_FILLING:
        raise ValueError(f"noise_filling must be one of {NOISE_FILLING}, got {noise_filling!r}")
    filled = (torch.arange(generated["codes"].shape[-1]) >= prompt_patches) & (noise_filling != "off")
    return tokenizer.decode(generated["codes"], list(channel_names), scale_codes=generated["scale_codes"],
                            normalize_phase=True, noise_filling=filled, coherent_noise=noise_filling == "coherent",
                            generator=generator)


__all__ = ["GENERATION_CONFIG_OPTIONS", "NOISE_FILLING", "decode_generated", "decoding_noise", "HIGH_TEMPERATURE", "MAX_TEMPERATURE", "check_count", "check_number",
           "check_sampling_controls", "check_seed", "check_stream_temperatures", "check_temperature", "check_top_k",
           "check_top_p", "default_temperature", "generation_kwargs", "has_generation_config"]


def band_temperatures(lbm_config, tokenizer_config, temperature: float, slow_temperature: float) -> list[float]:
    """Per-stream temperatures for `LBMForCausalLM.generate(stream_temperatures=...)`: `slow_temperature` takes the
    place of `temperature` for the codes of an mdct tokenizer's bands below its `gain_split` (the slow waves that
    neighbouring electrodes share); both are multiplied by the model's `stream_temperature_scales`. A
    released-design tokenizer has no slow bands: `temperature` throughout."""
    layout = lbm_config.code_layout
    slow = [False] * (2 if layout.has_scale_codes else 0)
    for is_slow in getattr(tokenizer_config, "slow_scales", [False] * layout.num_scales):
        slow += [is_slow] * layout.num_quantizers
    return lbm_config.stream_temperatures([slow_temperature if is_slow else temperature for is_slow in slow])
