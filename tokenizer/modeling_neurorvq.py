"""NeuroRVQ: a multi-scale EEG tokenizer (Barmpas et al., arXiv 2510.13068) as a transformers model.

`NeuroRVQTokenizer` is one API over two token designs (`config.token_design`), each in its own module:

- `design_released.py` (`released`, exact with the released code): a multi-scale temporal convolution and a
  transformer encode every one-second patch, one residual quantizer per scale, a transformer decoder predicts each
  patch's FFT log-amplitude and phase.
- `design_mdct.py` (`mdct`, the improved design; the bundled `neurorvq/tokenizer-small`): patches are frames of a
  lapped transform, each scale is a frequency band coded by k-means codebooks, two gain tokens per patch carry
  the amplitude, an optional transformer (the refiner) corrects the decoded frames.

Both share one API: `encode` (EEG [B, C, T] µV at `config.sampling_rate`, T = A * `patch_size`) -> codes
[B, S, K, C, A] + scale codes [B, 2, C, A]; `decode` -> microvolts; `forward` -> the training loss. This module
holds the facade: input checks, channel names -> vocabulary indices, the weight initialisation, and the calls into
the design. Callers that need to know how a design behaves ask the capability properties
(`encodes_whole_recordings`, `decodes_whole_recordings`, `max_window_tokens`, `supports_noise_filling`; the config
has them too) instead of testing `token_design`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .checks import check_codes_not_empty, check_input_values
from .configuration_neurorvq import NeuroRVQConfig
from .design_released import NeuroRVQAttention, NeuroRVQTransformer, spectrum_to_signal
from .loading import load_pretrained, register_bundled
from .modeling_common import (
    NeuroRVQEncoderOutput,
    NeuroRVQOutput,
    NeuroRVQSpectrumOutput,
    check_chunk_patches,
    masked_mean,
    masked_standardize,
    module_device,
)
from .quantization import check_search_precision

# Tokenizers shipped inside the package, loadable offline by name (in `from_pretrained`, the CLI and pipelines).
BUNDLED_MODELS = {"neurorvq/tokenizer-small": Path(__file__).resolve().parent / "pretrained" / "tokenizer-small"}
for _name, _folder in BUNDLED_MODELS.items():
    register_bundled(_name, _folder)


class NeuroRVQPreTrainedModel(PreTrainedModel):
    config_class = NeuroRVQConfig
    base_model_prefix = "neurorvq"
    main_input_name = "input_values"
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if getattr(module, "zero_init", False):  # the refiner's output: it starts as the identity
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std, a=-std, b=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, NeuroRVQTransformer):
            for parameter in (module.cls_token, module.spatial_embed, module.temporal_embed):
                init.trunc_normal_(parameter, std=std, a=-std, b=std)
            # depth-scaled residual projections, as released (children are initialised before their parent)
            for layer in module.layers:
                for weight in (layer.attn.proj.weight, layer.mlp.fc2.weight):
                    if not getattr(weight, "_is_hf_initialized", False):
                        weight.div_((2.0 * (layer.layer_index + 1)) ** 0.5)
        elif isinstance(module, NeuroRVQAttention):
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif hasattr(module, "codebook") and hasattr(module, "initialized"):
            for buffer in (module.codebook, module.ema_sum, module.ema_count, module.usage, module.initialized):
                init.zeros_(buffer)


class NeuroRVQTokenizer(NeuroRVQPreTrainedModel):
    """The NeuroRVQ EEG tokenizer: EEG in microvolts <-> codes [B, S, K, C, A].

    Example:

    ```python
    >>> tokenizer = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small")  # mdct design, bundled
    >>> encoded = tokenizer.encode(eeg_microvolts, channel_names)  # eeg [B, C, A * 200] at 200 Hz
    >>> eeg = tokenizer.decode(encoded.codes, channel_names, scale_codes=encoded.scale_codes)  # [B, C, A * 200] µV
    ```

    The design's parts are submodules of the tokenizer under the names saved weights use (`encoder`, `quantizers`,
    `decoder`; or `transform`, `refiner`, `quantizers`); `design` is the module that runs them.
    """

    def __init__(self, config: NeuroRVQConfig):
        super().__init__(config)
        design = self.config.design_class(self.config)
        for name in design.part_names:  # (in the order they were built: the seeded initialisation does not change)
            setattr(self, name, getattr(design, name))
        # not a submodule: its parts are registered once, above (state-dict keys without a `design.` prefix)
        self.__dict__["_design"] = design
        self._vocabulary_index = {name: i for i, name in enumerate(config.channel_vocabulary)}
        self.post_init()

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        design = self.__dict__.get("_design")
        if design is not None and (name == "config" or name in design.part_names):
            setattr(design, name, value)  # a part (or config) replaced here, `refiner = None` say, is the design's too

    @property
    def design(self) -> nn.Module:
        """The token design's module (`design_released.ReleasedDesign` or `design_mdct.MdctDesign`): its encode,
        decode and forward on checked inputs, and design-specific steps (e.g. `design.mdct_shapes`)."""
        return self._design

    @property
    def device(self) -> torch.device:
        """The device of the weights, or of the codebooks (an mdct tokenizer without refiner has buffers only)."""
        return module_device(self)

    @property
    def dtype(self) -> torch.dtype:
        return self._design.fixed_dtype or super().dtype

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus the bundled names (e.g. `"neurorvq/tokenizer-small"`, offline)."""
        return load_pretrained(super().from_pretrained, pretrained_model_name_or_path, cls.config_class.model_type,
                               *args, **kwargs)

    # ---- what callers may ask -------------------------------------------------------------------------

    @property
    def uses_scale_tokens(self) -> bool:
        """True when codes alone decode to microvolts (`scale_codes` carry the amplitude of every patch)."""
        return self.config.amplitude_side_information == "scale_tokens"

    @property
    def encodes_whole_recordings(self) -> bool:
        """See `NeuroRVQConfig.encodes_whole_recordings` (True for the mdct design's lapped frames)."""
        return self.config.encodes_whole_recordings

    @property
    def decodes_whole_recordings(self) -> bool:
        """See `NeuroRVQConfig.decodes_whole_recordings` (True for the mdct design's lapped frames)."""
        return self.config.decodes_whole_recordings

    @property
    def max_window_tokens(self) -> int | None:
        """See `NeuroRVQConfig.max_window_tokens` (None: any length)."""
        return self.config.max_window_tokens

    @property
    def supports_noise_filling(self) -> bool:
        """See `NeuroRVQConfig.supports_noise_filling`."""
        return self.config.supports_noise_filling

    @property
    def is_mdct(self) -> bool:
        """`token_design == "mdct"`. Prefer the capability properties above, which say what a caller needs."""
        return self.config.token_design == "mdct"

    # ---- input checks -------------------------------------------------------------------------------

    def channel_indices(self, channel_names, batch_size: int, num_channels: int) -> torch.LongTensor:
        """Vocabulary indices [B, C] of `channel_names` (one list for the batch, or one list per sample)."""
        if isinstance(channel_names, str) or not isinstance(channel_names, Sequence):
            raise ValueError("channel_names must be a list of channel names (or one list per batch item)")
        per_sample = len(channel_names) > 0 and not isinstance(channel_names[0], str)
        lists = list(channel_names) if per_sample else [channel_names] * batch_size
        if len(lists) != batch_size:
            raise ValueError(f"channel_names has {len(lists)} lists for a batch of {batch_size}")
        rows = []
        for names in lists:
            if len(names) != num_channels:
                raise ValueError(f"channel_names has {len(names)} names but the input has {num_channels} channels")
            unknown = [n for n in names if str(n).lower() not in self._vocabulary_index]
            if unknown:
                raise ValueError(
                    f"unknown channel names {unknown}: not in the model's vocabulary; map recorded names with "
                    "NeuroRVQFeatureExtractor (or neurorvq.tokenizer.channels.map_channel_names) first"
                )
            lowered = [str(n).lower() for n in names]
            if len(set(lowered)) != len(lowered):
                raise ValueError(f"channel_names has duplicates: {names}")
            rows.append([self._vocabulary_index[n] for n in lowered])
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _check_tokens(self, channels: int, num_patches: int) -> None:
        limit = self.config.max_window_tokens
        if limit is not None and channels * num_patches > limit:
            raise ValueError(f"too many tokens: {channels} channels x {num_patches} patches = {channels * num_patches} "
                             f"> max_patches={limit}; use shorter windows or fewer channels")

    def _check_input(self, input_values: torch.Tensor, channel_names, padding_mask):
        """Validate input [B, C, T] microvolts; return (channel_indices [B, C], patch mask [B, C, A] or None)."""
        if not isinstance(input_values, torch.Tensor):
            raise ValueError(f"input_values must be a torch.Tensor [B, C, T], got {type(input_values).__name__}")
        if input_values.dim() != 3:
            raise ValueError(f"input_values must have shape [B, C, T] (batch, channels, samples), got {tuple(input_values.shape)}")
        if not input_values.is_floating_point():
            raise ValueError(f"input_values must be floating point microvolts, got {input_values.dtype}")
        batch, channels, samples = input_values.shape
        patch = self.config.patch_size
        if batch == 0 or channels == 0:
            raise ValueError(f"input_values is empty: shape {tuple(input_values.shape)}")
        if samples < patch:
            raise ValueError(f"input is too short: {samples} samples, at least one patch of {patch} samples "
                             f"({patch / self.config.sampling_rate:g} s at {self.config.sampling_rate} Hz) is needed")
        if samples % patch:
            raise ValueError(f"the number of samples T={samples} must be a multiple of the patch size {patch}; "
                             "pad (with a padding_mask) or crop first")
        num_patches = samples // patch
        self._check_tokens(channels, num_patches)
        if not torch.isfinite(input_values).all():
            bad = (~torch.isfinite(input_values)).any(dim=(0, 2)).nonzero().flatten().tolist()
            raise ValueError(f"input_values contains NaN or Inf (channels at positions {bad})")
        indices = self.channel_indices(channel_names, batch, channels)
        patch_mask = None
        if padding_mask is not None:
            if tuple(padding_mask.shape) != tuple(input_values.shape):
                raise ValueError(f"padding_mask must have the input's shape {tuple(input_values.shape)}, "
                                 f"got {tuple(padding_mask.shape)}")
            patch_mask = padding_mask.to(self.device).bool().reshape(batch, channels, num_patches, patch).any(dim=-1)
            if not patch_mask.any(dim=(1, 2)).all():
                raise ValueError("padding_mask marks a whole window as padding")
            if patch_mask.all():
                patch_mask = None  # nothing padded: the exact released computation
        return indices, patch_mask

    def _check_codes(self, codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 5:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must be a LongTensor [B, S, K, C, A], got {shape}")
        check_codes_not_empty(codes)
        if codes.is_floating_point():
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        b, s, k, c, a = codes.shape
        if s != self.config.num_scales:
            raise ValueError(f"codes have {s} scales, the model has {self.config.num_scales}")
        if not 1 <= k <= self.config.num_quantizers:
            raise ValueError(f"codes have {k} stages, the model has 1 to {self.config.num_quantizers}")
        limit = self.config.max_window_tokens
        if limit is not None and c * a > limit:
            raise ValueError(f"too many tokens: {c} channels x {a} patches > max_patches={limit}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.config.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")

    def _token_mask(self, patch_mask: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Patch mask [B, C, A] (True = real) -> token mask [B, C * A] on the model's device."""
        return None if patch_mask is None else patch_mask.to(self.device).bool().reshape(batch, -1)

    def _design_step(self, name: str, design: str):
        """A step only one design has (e.g. `mdct_shapes`), or a `ValueError` naming that design."""
        step = getattr(self._design, name, None)
        if step is None:
            raise ValueError(f"{name} belongs to the {design} design; this tokenizer's token_design is "
                             f"{self.config.token_design!r}")
        return step

    # ---- scale tokens ---------------------------------------------------------------------------------

    def quantize_scales(self, first: torch.Tensor, second: torch.Tensor) -> torch.LongTensor:
        """Two per-patch amplitude values [B, N] (released: log-amplitude mean and std; mdct: log gains of the
        slow and fast coefficients) -> scale codes [B, 2, N] on the design's uniform grid."""
        return self._design.quantize_scales(first, second)

    def dequantize_scales(self, scale_codes: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale codes [B, 2, ...] -> the two amplitude values [B, ...] (see `quantize_scales`)."""
        return self._design.dequantize_scales(scale_codes)

    def mdct_shapes(self, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        """mdct design: MDCT coefficients [B, C, A, P] µV -> gain-normalised coefficients and scale codes
        [B, 2, C, A] (`MdctDesign.mdct_shapes`)."""
        return self._design_step("mdct_shapes", "mdct")(coefficients)

    # kept for callers written before the designs had their own modules (tests/test_encode_speed_paths.py,
    # benchmarks/encode_throughput.py); new code: `tokenizer.design.bands()` / `.spectrum_statistics(...)`
    def _bands(self) -> list[tuple[int, int]]:
        return self._design_step("bands", "mdct")()

    def _spectrum_statistics(self, patches: torch.Tensor, token_mask: torch.Tensor | None):
        return self._design_step("spectrum_statistics", "released")(patches, token_mask)

    # ---- encode / decode ----------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, input_values: torch.Tensor, channel_names, padding_mask: torch.Tensor | None = None,
               num_quantizers: int | None = None, search_precision: str | None = None) -> NeuroRVQEncoderOutput:
        """Tokenise EEG.

        Args:
            input_values: [B, C, T] float microvolts at `config.sampling_rate`, T a multiple of
                `config.patch_size`, C * T / patch_size <= `max_window_tokens` (released design; the mdct design
                encodes any length).
            channel_names: C vocabulary names (or one list per batch item).
            padding_mask: optional [B, C, T], 1 = real sample, 0 = padding.
            num_quantizers: use the first K' <= K stages of every scale.
            search_precision: nearest-codeword search, `"exact"` (fp32, the released arithmetic) or
                `"bf16-rescore"` (bf16 candidates rescored exactly, for CPUs with fast bf16 matrix products: the
                same codes, see `quantization.py`). `None`: each quantizer's `search_precision` (default exact).

        Returns:
            [`NeuroRVQEncoderOutput`] with `codes` [B, S, K', C, A] and the side information that [`decode`]
            needs to return microvolts (`scale_codes`, or the window statistics).
        """
        input_values = check_input_values(input_values, padding_mask, channel_names)
        channel_indices, patch_mask = self._check_input(input_values, channel_names, padding_mask)
        if num_quantizers is not None and not 1 <= num_quantizers <= self.config.num_quantizers:
            raise ValueError(f"num_quantizers must be in [1, {self.config.num_quantizers}], got {num_quantizers}")
        if search_precision is not None:
            check_search_precision(search_precision)
        return self._design.encode(input_values.to(self.device), channel_indices, patch_mask, num_quantizers,
                                   search_precision)

    def decode_spectrum(self, codes: torch.Tensor, channel_names, patch_mask: torch.Tensor | None = None) -> NeuroRVQSpectrumOutput:
        """Released design: codes [B, S, K', C, A] -> the decoder's z-scored log-amplitude and phase, each
        [B, C, A, patch_size]."""
        decode_spectrum = self._design_step("decode_spectrum", "released")
        self._check_codes(codes)
        channel_indices = self.channel_indices(channel_names, codes.shape[0], codes.shape[3])
        return decode_spectrum(codes, channel_indices, self._token_mask(patch_mask, codes.shape[0]))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, channel_names, log_amplitude_mean: torch.Tensor | None = None,
               log_amplitude_std: torch.Tensor | None = None, scale_codes: torch.LongTensor | None = None,
               patch_mask: torch.Tensor | None = None, normalize_phase: bool = False,
               noise_filling: bool | torch.Tensor = False, coherent_noise: bool = False,
               generator: torch.Generator | None = None, chunk_patches: int | None = None) -> torch.Tensor:
        """Codes back to EEG.

        Args:
            codes: [B, S, K', C, A] (K' <= K: fewer stages decode too, coarser).
            channel_names: C vocabulary names (or one list per batch item).
            log_amplitude_mean, log_amplitude_std: [B] window statistics from [`encode`] (the released
                design needs them to restore absolute amplitude), or [B, C, A] per-patch statistics.
            scale_codes: [B, 2, C, A] amplitude scale tokens from [`encode`] (models with
                `amplitude_side_information="scale_tokens"`): then codes alone decode to microvolts.
            patch_mask: optional [B, C, A], True = real patch (from [`encode`]).
            normalize_phase: released design only: use only the direction of the predicted (cos, sin). The
                default (as released) minimises the reconstruction MSE but shrinks the amplitude of uncertain
                frequencies; `True` restores realistic amplitude (for generation) at a higher MSE. The mdct design
                has no phase head: it decodes real amplitude either way and ignores this flag.
            noise_filling: with `supports_noise_filling` (an mdct design with fitted `config.noise_filling_levels`):
                add random detail of the energy the codes did not keep (the bundled model's fast bands lose 12-42%
                of their power to coarse codes), so that band powers and the spectral slope are those of real EEG;
                for generation, at about twice the squared error of the default. A bool mask broadcastable to
                [B, C, A] fills only the patches where it is True (e.g. a continuation, not its real prompt). A
                tokenizer without fitted levels (and the released design) ignores it.
            coherent_noise: with `noise_filling`: mix the noise across channels, per refiner window and band, with the
                decoded band's inter-channel correlation (`MdctDesign.correlate_noise`), so the filled detail is as
                correlated between electrodes as the decoded band is; independent noise (the default, as before)
                whitens the spatial covariance of the bands it fills. Same draws, same per-channel power.
            generator: the random generator of the noise (reproducible decoding), else the global one.
            chunk_patches: mdct design: patches synthesised at a time (rounded up to whole refiner windows; default
                `design_mdct.DECODE_CHUNK_PATCHES`), which bounds the memory beyond the result for any length. Any
                chunk size decodes the same signal (up to float round-off, ~1e-6 relative) and the same noise. A
                positive int or None (checked for both designs; the released design decodes at once).

        Returns:
            EEG [B, C, A * patch_size] in microvolts.
        """
        self._check_codes(codes)
        check_chunk_patches(chunk_patches)  # an invalid chunk size is an error with either design
        batch, channels = codes.shape[0], codes.shape[3]
        channel_indices = self.channel_indices(channel_names, batch, channels)
        return self._design.decode(codes, channel_indices, self._token_mask(patch_mask, batch),
                                   log_amplitude_mean=log_amplitude_mean, log_amplitude_std=log_amplitude_std,
                                   scale_codes=scale_codes, normalize_phase=normalize_phase,
                                   noise_filling=noise_filling, coherent_noise=coherent_noise, generator=generator,
                                   chunk_patches=chunk_patches)

    # ---- training forward ---------------------------------------------------------------------------

    def forward(self, input_values: torch.Tensor, channel_names, padding_mask: torch.Tensor | None = None,
                return_dict: bool | None = None) -> NeuroRVQOutput:
        """Encode, quantise, decode and score a batch.

        Args:
            input_values: [B, C, T] float microvolts (see [`encode`]).
            channel_names: C vocabulary names (or one list per batch item).
            padding_mask: optional [B, C, T], 1 = real sample.

        Returns:
            [`NeuroRVQOutput`]: the weighted loss, its terms, the reconstruction in microvolts, z-scored input
            and reconstruction, codes and per-stage codebook usage and perplexity.
        """
        input_values = check_input_values(input_values, padding_mask, channel_names)
        channel_indices, patch_mask = self._check_input(input_values, channel_names, padding_mask)
        token_mask = None if patch_mask is None else patch_mask.reshape(input_values.shape[0], -1)
        return self._design(input_values.to(self.device), channel_indices, token_mask)


__all__ = ["BUNDLED_MODELS", "NeuroRVQEncoderOutput", "NeuroRVQOutput", "NeuroRVQPreTrainedModel",
           "NeuroRVQSpectrumOutput", "NeuroRVQTokenizer", "masked_mean", "masked_standardize", "spectrum_to_signal"]
