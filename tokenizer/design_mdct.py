"""The `mdct` token design of the NeuroRVQ tokenizer (the improved design; the bundled `neurorvq/tokenizer-small`).

Every channel's one-second patches are frames of a lapped transform (MDCT, 50% overlap, `transform.py`): frame a
spans patches a - 1/2 to a + 3/2, so decoded patches cross-fade into their neighbours and have no seams. Two gains
per patch (the RMS of the slow coefficients, below `gain_split`, and of the fast ones) are the scale tokens; each
"scale" is a frequency band of the gain-normalised frame, coded by its own residual quantizer (codebooks by
k-means, `codebook_fitting.py`). Decoding looks the codewords up, lets an optional transformer over all channels
and patches of the window correct them (the refiner), optionally adds the energy the codes did not keep as noise
(noise filling), applies the gains and overlap-adds the frames: real amplitude, and no seams at patch edges.

Shapes: B windows, C channels, A patches, P = `patch_size` MDCT coefficients per frame, S bands, K stages.

`MdctDesign` holds the parts (`transform`, no weights; `refiner` when `refiner_layers` > 0; `quantizers`: the
state-dict keys of every saved mdct tokenizer) and the design's encode / decode / forward; `NeuroRVQTokenizer`
checks the inputs and calls it. `MdctConfig` lists the config fields only this design reads; `validate_config`
checks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from einops import rearrange
from torch import nn

from .checks import check_config_fields
from .modeling_common import (
    NeuroRVQEncoderOutput,
    NeuroRVQOutput,
    build_quantizers,
    check_scale_codes,
    dequantize_scales,
    masked_mean,
    masked_standardize,
    module_device,
    quantize_scales,
)
from .quantization import code_statistics
from .transform import LappedTransform

if TYPE_CHECKING:
    from .configuration_neurorvq import NeuroRVQConfig

# `decode` synthesises this many patches at a time (rounded up to whole refiner windows), so that its memory beyond
# the returned signal does not grow with the length (an hour of 19 channels would otherwise hold about ten float
# copies of [B, C, A, P] at once, near 1 GB)
DECODE_CHUNK_PATCHES = 256

# ----------------------------------------------------------------------------------------------------
# Config fields of this design
# ----------------------------------------------------------------------------------------------------


@dataclass
class MdctConfig:
    r"""The fields of [`NeuroRVQConfig`] that only the mdct design reads (attributes of the config, in every
    config.json whatever its design). The design also needs `amplitude_side_information="scale_tokens"` and
    `quantizer_type="standard"`, and an even `patch_size`.

    Args:
        band_edges (`list[int]`): MDCT coefficient indices bounding the S bands (S + 1 increasing numbers from 0 to
            patch_size; coefficient k is at (k + 1/2) * sampling_rate / (2 * patch_size) Hz).
        gain_split (`int`): coefficients below it are scaled by the first gain token (slow rhythms), the rest by
            the second.
        log_gain_range (`list[float]`): the uniform grid of the gain tokens over the natural log of the RMS
            coefficient (microvolts).
        refiner_layers (`int`): layers of the joint decoder, a transformer over every (channel, patch) of a window
            that corrects the dequantised MDCT frames from what the other channels and seconds carry (0 = none:
            decoding is the codebook lookup alone).
        refiner_hidden_size (`int`), refiner_heads (`int`): its width and heads.
        noise_filling_levels (`list[float]`, *optional*): per MDCT coefficient (patch_size values), the mean squared
            error that decoding leaves on it, relative to the mean decoded power of its band (gain-normalised
            units), fitted on training EEG by `codebook_fitting.fit_noise_filling`. Coarse codes keep little of the
            fast bands' energy; `decode(noise_filling=True)` adds Gaussian noise of these levels so decoded EEG has
            real band powers and spectral slope (at a higher squared error). None = not fitted.
        difference_loss_weight (`float`): weight of the squared error of the sample-to-sample steps of the z-scored
            reconstruction (0 = off). It weights errors by frequency, high ones most; a lapped transform leaves the
            aliasing of coarse codes folded at the patch edges as high-frequency error, so this term trains the
            refiner against seams.
    """

    band_edges: list[int] | None = None
    gain_split: int = 16
    log_gain_range: list[float] | None = None
    refiner_layers: int = 0
    refiner_hidden_size: int = 128
    refiner_heads: int = 4
    noise_filling_levels: list[float] | None = None
    difference_loss_weight: float = 0.0

    def __post_init__(self):  # lists as lists (JSON may give tuples), None (or empty) = the default
        self.band_edges = list(self.band_edges or [0, 16, 32, 60, 200])
        self.log_gain_range = list(self.log_gain_range or [-4.0, 7.0])
        if self.noise_filling_levels is not None:
            self.noise_filling_levels = [float(v) for v in self.noise_filling_levels]


def validate_config(config: NeuroRVQConfig) -> None:
    """Raise `ValueError` naming the first invalid field the mdct design reads."""
    edges = config.band_edges
    if (len(edges) < 2 or any(isinstance(e, bool) or not isinstance(e, int) for e in edges) or edges[0] != 0
            or edges[-1] != config.patch_size or any(b <= a for a, b in zip(edges[:-1], edges[1:]))):
        raise ValueError(f"NeuroRVQConfig.band_edges must increase from 0 to patch_size={config.patch_size}, "
                         f"got {edges!r}")
    if config.patch_size % 2:
        raise ValueError(f"NeuroRVQConfig.patch_size must be even for the mdct design, got {config.patch_size}")
    split = config.gain_split
    if isinstance(split, bool) or not isinstance(split, int) or not 0 < split < config.patch_size:
        raise ValueError(f"NeuroRVQConfig.gain_split must be an integer in (0, {config.patch_size}), got {split!r}")
    check_config_fields(config, positive_ints=("refiner_hidden_size", "refiner_heads"),
                        non_negative=("difference_loss_weight",), ranges=("log_gain_range",))
    if isinstance(config.refiner_layers, bool) or not isinstance(config.refiner_layers, int) or config.refiner_layers < 0:
        raise ValueError(f"NeuroRVQConfig.refiner_layers must be an integer >= 0, got {config.refiner_layers!r}")
    if config.refiner_hidden_size % config.refiner_heads:
        raise ValueError(f"NeuroRVQConfig.refiner_heads ({config.refiner_heads}) must divide refiner_hidden_size "
                         f"({config.refiner_hidden_size})")
    if config.amplitude_side_information != "scale_tokens":
        raise ValueError("NeuroRVQConfig: the mdct design carries amplitude in scale tokens; set "
                         "amplitude_side_information='scale_tokens'")
    if config.quantizer_type != "standard":
        raise ValueError("NeuroRVQConfig: the mdct design uses quantizer_type='standard'")
    levels = config.noise_filling_levels
    if levels is not None and (len(levels) != config.patch_size or not all(math.isfinite(v) and v >= 0 for v in levels)):
        raise ValueError(f"NeuroRVQConfig.noise_filling_levels must be {config.patch_size} finite numbers >= 0 "
                         f"(one per MDCT coefficient), got {len(levels)} values")


# ----------------------------------------------------------------------------------------------------
# The refiner (joint decoder)
# ----------------------------------------------------------------------------------------------------


class NeuroRVQRefiner(nn.Module):
    """Joint decoder: a transformer over every (channel, patch) of a window that corrects the dequantised,
    gain-normalised MDCT frames with what the other channels and seconds carry (neighbouring electrodes see the
    same sources, so their quantisation errors are partly predictable). Its output layer starts at zero: an
    untrained refiner decodes exactly as the codebooks alone."""

    def __init__(self, config: NeuroRVQConfig):
        super().__init__()
        dim, size = config.refiner_hidden_size, config.patch_size
        self.frame_in = nn.Linear(size + 2, dim)
        self.channel_embed = nn.Embedding(len(config.channel_vocabulary), dim)
        self.patch_embed = nn.Embedding(config.max_patches, dim)
        layer = nn.TransformerEncoderLayer(dim, config.refiner_heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.refiner_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.frame_out = nn.Linear(dim, size)
        self.frame_out.zero_init = True  # (transformers initialises modules that own parameters: flag the Linear)

    def forward(self, shapes: torch.Tensor, log_gains: torch.Tensor, channel_indices: torch.Tensor,
                token_mask: torch.Tensor | None) -> torch.Tensor:
        """shapes [B, C, A, P] (gain-normalised frames), log_gains [B, C, A, 2], channel_indices [B, C],
        token_mask [B, C * A] (True = real) -> corrected shapes [B, C, A, P]."""
        batch, channels, patches, size = shapes.shape
        x = self.frame_in(torch.cat((shapes, log_gains / 4), dim=-1))  # log gains span about [-4, 7]
        x = x + self.channel_embed(channel_indices)[:, :, None] + self.patch_embed.weight[:patches]
        padding = None if token_mask is None else ~token_mask
        if padding is not None:  # a window of padding only would attend to nothing (NaN): let it see itself
            padding = padding & ~padding.all(dim=1, keepdim=True)
        x = self.transformer(x.reshape(batch, channels * patches, -1), src_key_padding_mask=padding)
        return shapes + self.frame_out(self.norm(x)).reshape(batch, channels, patches, size)


# ----------------------------------------------------------------------------------------------------
# The design
# ----------------------------------------------------------------------------------------------------


class MdctDesign(nn.Module):
    """Encode / decode / forward of the mdct design, on inputs `NeuroRVQTokenizer` has checked.

    Parts (registered on the tokenizer under these names, the state-dict keys of saved models): `transform`
    ([`LappedTransform`], no weights), `refiner` ([`NeuroRVQRefiner`] or None), `quantizers` (one residual
    quantizer per band, of the band's width).
    """

    config_fields = MdctConfig
    validate_config = staticmethod(validate_config)
    part_names = ("transform", "refiner", "quantizers")  # in the order they are built
    # what callers may ask (NeuroRVQConfig / NeuroRVQTokenizer properties of the same meaning)
    lapped_frames = True  # frames overlap their neighbours: a recording is coded whole (see NeuroRVQConfig)
    bounded_windows = False  # frames are coded on their own and the refiner windows itself: any length
    scales_are_frequency_bands = True
    fixed_dtype = torch.float32  # the transform, gains and codebooks compute in float32 whatever the weights

    @staticmethod
    def num_scales(config: NeuroRVQConfig) -> int:
        """One frequency band (and its quantizer) per scale."""
        return len(config.band_edges) - 1

    @staticmethod
    def slow_scales(config: NeuroRVQConfig) -> list[bool]:
        """Per band: True when all its coefficients lie below `gain_split` (slow waves, the first gain token)."""
        return [high <= config.gain_split for high in config.band_edges[1:]]

    def __init__(self, config: NeuroRVQConfig):
        super().__init__()
        self.config = config
        self.transform = LappedTransform(config.patch_size)  # fixed: no weights
        # (this order: a seed gives the same weights as before the split)
        self.refiner = NeuroRVQRefiner(config) if config.refiner_layers else None
        self.quantizers = build_quantizers(config, config.band_widths)

    @property
    def device(self) -> torch.device:
        return module_device(self)

    # ---- gains (the scale tokens) and bands ------------------------------------------------------------

    def _scale_ranges(self) -> list[tuple[float, float]]:
        low, high = self.config.log_gain_range  # both tokens are log gains
        return [(float(low), float(high))] * 2

    def quantize_scales(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.LongTensor:
        """Log gains of the slow and fast coefficients [B, ...] -> scale codes [B, 2, ...]."""
        return quantize_scales((slow, fast), self._scale_ranges(), self.config.num_scale_tokens)

    def dequantize_scales(self, scale_codes: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale codes [B, 2, ...] -> (log gain of the slow band, of the fast band) [B, ...]."""
        slow, fast = dequantize_scales(scale_codes, self._scale_ranges(), self.config.num_scale_tokens)
        return slow, fast

    def gains(self, coefficients: torch.Tensor) -> torch.Tensor:
        """MDCT coefficients [..., P] -> log RMS of the slow (< gain_split) and fast coefficients [..., 2]."""
        split = self.config.gain_split
        power = torch.stack((coefficients[..., :split].pow(2).mean(-1), coefficients[..., split:].pow(2).mean(-1)), -1)
        return 0.5 * torch.log(power.clamp(min=1e-12))

    def apply_gains(self, values: torch.Tensor, log_gains: torch.Tensor, divide: bool) -> torch.Tensor:
        """Scale coefficients [..., P] by the gains exp(log_gains [..., 2]) (or divide by them)."""
        split, size = self.config.gain_split, self.config.patch_size
        gain = torch.exp(log_gains).repeat_interleave(torch.tensor([split, size - split], device=values.device), dim=-1)
        return values / gain if divide else values * gain

    def mdct_shapes(self, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        """MDCT coefficients [B, C, A, P] (µV) -> gain-normalised coefficients [B, C, A, P] (what the band
        quantizers code) and the scale codes [B, 2, C, A] (the two quantised log gains)."""
        log_gains = self.gains(coefficients)  # [B, C, A, 2]
        scale_codes = self.quantize_scales(log_gains[..., 0], log_gains[..., 1])  # [B, 2, C, A]
        quantized_gains = torch.stack(self.dequantize_scales(scale_codes), dim=-1)
        return self.apply_gains(coefficients, quantized_gains, divide=True), scale_codes

    def bands(self) -> list[tuple[int, int]]:
        """(first, end) coefficient index of every band."""
        edges = self.config.band_edges
        return list(zip(edges[:-1], edges[1:]))

    def band_codes(self, shapes: torch.Tensor, num_quantizers: int | None = None,
                   search_precision: str | None = None) -> torch.LongTensor:
        """Gain-normalised frames [B, C, A, P] -> codes [B, S, K', C, A] (each band by its own quantizer)."""
        lead = shapes.shape[:3]
        codes = [q.encode(shapes[..., low:high].reshape(-1, high - low), num_quantizers, search_precision).reshape(-1, *lead)
                 for (low, high), q in zip(self.bands(), self.quantizers)]  # S x [K', B, C, A]
        return torch.stack(codes).permute(2, 0, 1, 3, 4).contiguous()

    def band_shapes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, S, K', C, A] -> dequantised gain-normalised frames [B, C, A, P]."""
        return torch.cat([q.decode(codes[:, s].movedim(1, 0)) for s, q in enumerate(self.quantizers)], dim=-1)

    # ---- encode ----------------------------------------------------------------------------------------

    def encode(self, input_values: torch.Tensor, channel_indices: torch.Tensor, patch_mask: torch.Tensor | None,
               num_quantizers: int | None, search_precision: str | None) -> NeuroRVQEncoderOutput:
        """input_values [B, C, A * P] µV on the model's device -> codes [B, S, K', C, A] and scale codes
        [B, 2, C, A]. Every frame is coded on its own: `channel_indices` are not needed."""
        shapes, scale_codes = self.mdct_shapes(self.transform(input_values.float()))
        codes = self.band_codes(shapes, num_quantizers, search_precision)
        log_mean, log_std = self.dequantize_scales(scale_codes)
        return NeuroRVQEncoderOutput(codes=codes, log_amplitude_mean=log_mean, log_amplitude_std=log_std,
                                     scale_codes=scale_codes, patch_mask=patch_mask,
                                     quantized=self.band_shapes(codes).unsqueeze(1))  # [B, 1, C, A, P]

    # ---- decode: refiner windows, noise filling, chunked synthesis ---------------------------------------

    def decode_window(self, channels: int) -> int:
        """Patches per refiner window (its context: at most max_patches tokens over `channels` channels, as in
        training); noise filling draws per window and chunked decoding works in whole windows too."""
        return max(1, self.config.max_patches // channels)

    def refined_shapes(self, shapes: torch.Tensor, log_gains: torch.Tensor, channel_indices: torch.Tensor,
                       token_mask: torch.Tensor | None) -> torch.Tensor:
        """Dequantised frames [B, C, A, P] + log gains [B, C, A, 2] -> the refiner's corrected frames (the same
        frames without a refiner). Windows start at the first given patch (patch 0, or a chunk of whole windows)."""
        if self.refiner is None:
            return shapes
        batch, channels, num_patches, _ = shapes.shape
        step = self.decode_window(channels)
        mask = None if token_mask is None else token_mask.reshape(batch, channels, num_patches)
        return torch.cat([
            self.refiner(shapes[:, :, a:a + step], log_gains[:, :, a:a + step], channel_indices,
                         None if mask is None else mask[:, :, a:a + step].reshape(batch, -1))
            for a in range(0, num_patches, step)], dim=2)

    def band_power(self, shapes: torch.Tensor) -> torch.Tensor:
        """Frames [..., P] -> every coefficient's band mean power [..., P] (mean of the squares over its band)."""
        return torch.cat([shapes[..., low:high].pow(2).mean(-1, keepdim=True).expand(*shapes.shape[:-1], high - low)
                          for low, high in self.bands()], dim=-1)

    def fill_noise(self, shapes: torch.Tensor, where: torch.Tensor, generator: torch.Generator | None,
                   coherent: bool = False) -> torch.Tensor:
        """Decoded frames [B, C, A, P] + Gaussian noise of variance `noise_filling_levels[k]` x the band mean
        power of coefficient k in that frame, in the frames `where` ([B, C, A] bool) is True: the energy the codes
        did not keep, as random detail. The noise is drawn one refiner window ([B, C, window, P]) at a time, in
        patch order from the first given patch (patch 0 or a chunk of whole windows), so that a chunked decoding
        draws the same numbers as a whole one."""
        levels = torch.tensor(self.config.noise_filling_levels, dtype=shapes.dtype, device=shapes.device)
        batch, channels, num_patches, size = shapes.shape
        step = self.decode_window(channels)
        noise = torch.cat([
            torch.randn((batch, channels, min(step, num_patches - a), size), generator=generator, dtype=shapes.dtype,
                        device="cpu" if generator is None else generator.device)
            for a in range(0, num_patches, step)], dim=2).to(shapes.device)
        if coherent:
            noise = self.correlate_noise(shapes, noise)
        return shapes + (levels * self.band_power(shapes)).sqrt() * noise * where[..., None]

    def correlate_noise(self, shapes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Independent unit noise [B, C, A, P] -> noise with, per refiner window and band, the inter-channel
        correlation R of the decoded frames `shapes` [B, C, A, P] in that band: L z with L L^T = R (Cholesky), so each
        channel keeps unit variance. Real EEG's detail is shared between neighbouring electrodes as its bands are."""
        batch, channels, num_patches, _ = shapes.shape
        step, out = self.decode_window(channels), torch.empty_like(noise)
        eye = torch.eye(channels, dtype=shapes.dtype, device=shapes.device)
        for a in range(0, num_patches, step):
            for low, high in self.bands():
                x = shapes[:, :, a:a + step, low:high].flatten(2)  # [B, C, n]
                second = x @ x.transpose(1, 2) / x.shape[-1]
                scale = second.diagonal(dim1=1, dim2=2).clamp(min=1e-12).rsqrt()
                correlation = second * scale[:, :, None] * scale[:, None, :]
                factor, info = torch.linalg.cholesky_ex(0.999 * correlation + 0.001 * eye)  # (ridge: flat channels)
                factor = torch.where((info == 0)[:, None, None], factor, eye)  # not positive definite: independent
                z = noise[:, :, a:a + step, low:high]
                out[:, :, a:a + step, low:high] = (factor @ z.flatten(2)).view_as(z)
        return out

    def decode_chunk(self, chunk_patches: int | None, channels: int) -> int:
        """Patches per synthesis chunk: `chunk_patches` (default `DECODE_CHUNK_PATCHES`; checked by the tokenizer)
        rounded up to whole refiner windows, so that the refiner sees the same windows as in a whole decoding."""
        if chunk_patches is None:
            chunk_patches = DECODE_CHUNK_PATCHES
        step = self.decode_window(channels)
        return -(-chunk_patches // step) * step

    def synthesis_frames(self, codes: torch.Tensor, scale_codes: torch.Tensor, channel_indices: torch.Tensor,
                         mask: torch.Tensor | None, where: torch.Tensor | None,
                         generator: torch.Generator | None, coherent_noise: bool = False) -> torch.Tensor:
        """One span of whole refiner windows (from a window's start): codes [B, S, K', C, n], scale codes
        [B, 2, C, n], mask [B, C, n] (True = real) or None, where [B, C, n] (noise filling) or None -> MDCT
        coefficients [B, C, n, P] µV: the refiner's correction (if any), noise filling, the gains."""
        batch, channels, num_patches = codes.shape[0], codes.shape[3], codes.shape[4]
        log_gains = torch.stack(self.dequantize_scales(scale_codes), dim=-1)  # [B, C, n, 2]
        token_mask = None if mask is None else mask.reshape(batch, channels * num_patches)
        shapes = self.refined_shapes(self.band_shapes(codes), log_gains, channel_indices, token_mask)
        if where is not None:
            shapes = self.fill_noise(shapes, where, generator, coherent_noise)
        return self.apply_gains(shapes, log_gains, divide=False)

    def synthesize(self, codes: torch.Tensor, scale_codes: torch.Tensor, channel_indices: torch.Tensor,
                   token_mask: torch.Tensor | None, noise_filling: bool | torch.Tensor = False,
                   generator: torch.Generator | None = None, chunk_patches: int | None = None,
                   coherent_noise: bool = False) -> torch.Tensor:
        """Codes [B, S, K', C, A] + scale codes [B, 2, C, A] (token_mask [B, C * A], True = real) -> EEG
        [B, C, A * P] µV: the refiner's correction (if any), noise filling (if asked and fitted), the gains, and
        the overlap-added inverse MDCT.

        Synthesised in chunks of whole refiner windows (`decode_chunk`), so memory beyond the result is that of
        about two chunks whatever A. Chunking changes nothing but round-off: the refiner and the noise see the same
        windows in the same order, and a chunk's samples come from its frames and one neighbouring frame on each
        side (`LappedTransform.inverse` with `halo`), with start / stop windows only at the signal's real ends."""
        batch, channels, num_patches = codes.shape[0], codes.shape[3], codes.shape[4]
        chunk, size, device = self.decode_chunk(chunk_patches, channels), self.config.patch_size, self.device
        mask = None if token_mask is None else token_mask.reshape(batch, channels, num_patches)
        where = torch.as_tensor(noise_filling, dtype=torch.bool, device=device)
        if self.config.noise_filling_levels is not None and where.any():  # decided once: every chunk draws noise
            try:
                where = where.expand(batch, channels, num_patches)  # a view: no copy
            except RuntimeError:
                raise ValueError(f"noise_filling must be a bool or a bool mask broadcastable to [B, C, A] = "
                                 f"{[batch, channels, num_patches]}, got shape {list(where.shape)}") from None
        else:
            where = None

        def frames(start: int) -> torch.Tensor:  # coefficients [B, C, n, P] of the chunk from patch `start`
            span = slice(start, min(start + chunk, num_patches))
            return self.synthesis_frames(codes[..., span].to(device), scale_codes[..., span], channel_indices,
                                         None if mask is None else mask[..., span],
                                         None if where is None else where[..., span], generator, coherent_noise)

        # chunk by chunk, in patch order (the noise's draws): a chunk is overlap-added once the next one's first
        # frame is known; `before` is the previous chunk's last frame
        signal, before, current = None, None, frames(0)
        for start in range(0, num_patches, chunk):
            stop = min(start + chunk, num_patches)
            after = frames(stop) if stop < num_patches else None
            context = [t for t in (before, current, None if after is None else after[:, :, :1]) if t is not None]
            part = self.transform.inverse(torch.cat(context, dim=2), halo=(before is not None, after is not None))
            if stop == num_patches and start == 0:  # one chunk: the whole signal
                return part
            if signal is None:
                signal = part.new_empty(batch, channels, num_patches * size)
            signal[..., start * size: stop * size] = part
            before, current = current[:, :, -1:].clone(), after  # (a copy: the view would keep the chunk alive)
        return signal

    def decode(self, codes: torch.Tensor, channel_indices: torch.Tensor, token_mask: torch.Tensor | None, *,
               scale_codes=None, noise_filling: bool | torch.Tensor = False, generator: torch.Generator | None = None,
               chunk_patches: int | None = None, coherent_noise: bool = False, **other_design_options) -> torch.Tensor:
        """Codes [B, S, K', C, A] + scale codes [B, 2, C, A] -> EEG [B, C, A * P] µV (see
        `NeuroRVQTokenizer.decode`; `other_design_options`, the released design's window statistics and phase
        normalisation, do not apply here: the gains carry the amplitude and there is no phase head)."""
        if scale_codes is None:
            raise ValueError("decode needs scale_codes (from encode): they carry the amplitude of every patch")
        batch, channels, num_patches = codes.shape[0], codes.shape[3], codes.shape[4]
        scale_codes = check_scale_codes(scale_codes, (batch, 2, channels, num_patches), self.config.num_scale_tokens,
                                        self.device)
        return self.synthesize(codes, scale_codes, channel_indices, token_mask, noise_filling, generator,
                               chunk_patches, coherent_noise)

    # ---- training forward ----------------------------------------------------------------------------

    def forward(self, input_values: torch.Tensor, channel_indices: torch.Tensor,
                token_mask: torch.Tensor | None) -> NeuroRVQOutput:
        """Encode and decode [B, C, A * P] µV (token_mask [B, C * A]). Codebooks are fixed (fitted by k-means,
        `codebook_fitting`); the loss is the z-scored time-domain MSE (+ the step error), which trains the refiner
        when there is one."""
        config = self.config
        input_values = input_values.float()
        batch, channels, _ = input_values.shape
        shapes, scale_codes = self.mdct_shapes(self.transform(input_values))
        codes = self.band_codes(shapes)
        signal = self.synthesize(codes, scale_codes, channel_indices, token_mask)
        patches = lambda t: rearrange(t, "b c (a p) -> b (c a) p", p=config.patch_size)  # noqa: E731
        zscored_input, _, _ = masked_standardize(patches(input_values), token_mask)
        zscored_reconstruction, _, _ = masked_standardize(patches(signal), token_mask)
        time_loss = masked_mean((zscored_reconstruction - zscored_input) ** 2, token_mask)
        to_signal = lambda t: rearrange(t, "b (c a) p -> b c (a p)", c=channels)  # noqa: E731
        steps = torch.diff(to_signal(zscored_reconstruction - zscored_input), dim=-1)  # [B, C, T - 1]
        if token_mask is None:
            difference_loss = steps.pow(2).mean()
        else:  # steps between two real samples
            real = token_mask.reshape(batch, channels, -1).repeat_interleave(config.patch_size, dim=-1)
            real = (real[..., 1:] & real[..., :-1]).to(steps.dtype)
            difference_loss = (steps.pow(2) * real).sum() / real.sum().clamp(min=1)
        # per (scale, stage) usage and perplexity of this batch's codes, for the training log (padding included)
        usage, perplexity = torch.stack([
            torch.stack([torch.stack(code_statistics(codes[:, s, k], config.codebook_size)) for k in range(codes.shape[2])])
            for s in range(codes.shape[1])]).unbind(-1)  # [S, K] each
        return NeuroRVQOutput(
            loss=config.time_loss_weight * time_loss + config.difference_loss_weight * difference_loss,
            time_loss=time_loss, difference_loss=difference_loss, reconstruction=signal,
            zscored_input=to_signal(zscored_input), zscored_reconstruction=to_signal(zscored_reconstruction),
            codes=codes, scale_codes=scale_codes, codebook_usage=usage, codebook_perplexity=perplexity,
        )
