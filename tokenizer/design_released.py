"""The `released` token design of the NeuroRVQ tokenizer: the paper's model, exact with the released code.

EEG [B, C, T] microvolts (T = A * P, P = `patch_size` samples: one second at 200 Hz) is cut into patches, C x A
token positions, channel-major (N = C * A). A four-branch temporal convolution turns every patch into one feature
vector per scale; one shared transformer encodes the S scales (batched as one call); each scale is quantised by
its own residual quantizer (K stages). The decoder embeds each scale's quantised vectors, runs one shared
transformer, and predicts per patch the z-scored log-amplitude and the phase (sin, cos) of its P-point FFT; an
inverse FFT turns them back into microvolts, given the log-amplitude statistics (of the window, or per patch as
scale tokens).

`ReleasedDesign` holds the parts (`encoder`, `quantizers`, `decoder`: the state-dict keys of every saved
released-design tokenizer) and the design's encode / decode / forward; `NeuroRVQTokenizer` checks the inputs and
calls it. `ReleasedConfig` lists the config fields only this design reads; `validate_config` checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checks import check_config_fields
from .modeling_common import (
    NeuroRVQEncoderOutput,
    NeuroRVQOutput,
    NeuroRVQSpectrumOutput,
    build_quantizers,
    check_scale_codes,
    dequantize_scales,
    masked_mean,
    masked_standardize,
    module_device,
    quantize_scales,
)

if TYPE_CHECKING:
    from .configuration_neurorvq import NeuroRVQConfig

ENCODER_PASS_TOKENS = 2048  # tokens per pass through the encoder blocks (see NeuroRVQTransformer)

# ----------------------------------------------------------------------------------------------------
# Config fields of this design
# ----------------------------------------------------------------------------------------------------


@dataclass
class ReleasedConfig:
    r"""The fields of [`NeuroRVQConfig`] that only the released design reads (attributes of the config, in every
    config.json whatever its design). Defaults: the released EEG v1 sizes (`configs/tokenizer/official-eeg-v1.json`).

    Args:
        conv_channels (`int`): feature maps of every temporal-convolution branch.
        conv_kernel_sizes (`list[list[int]]`): per scale, the kernel sizes of its two conv stages.
            The number of branches is the number of scales.
        conv_pool_sizes (`list[int]`): average-pool size after each conv stage.
        conv_groups (`int`): GroupNorm groups in the conv branches.
        hidden_size (`int`): transformer width; must equal `patch_size / prod(conv_pool_sizes) * conv_channels`.
        num_attention_heads (`int`): heads of every attention layer.
        mlp_ratio (`float`): MLP width / hidden_size.
        encoder_layers (`int`), decoder_layers (`int`): depths of the shared encoder/decoder transformers.
        code_dim (`int`): dimension of the code space.
        scale_mean_range, scale_std_range (`list[float]`): with `amplitude_side_information="scale_tokens"`, the
            uniform grids of the per-patch log-amplitude mean and std.
        quantizer_loss_weight, amplitude_loss_weight, phase_loss_weight (`float`): weights of the quantizer,
            log-amplitude and phase loss terms (the time-domain term: `time_loss_weight`, shared).
        phase_norm_weight (`float`): weight of the (sin^2 + cos^2 - 1)^2 penalty in the phase loss.
        layer_norm_eps (`float`), qk_norm_eps (`float`): LayerNorm epsilons (blocks/heads, per-head q/k).
    """

    conv_channels: int = 8
    conv_kernel_sizes: list[list[int]] | None = None
    conv_pool_sizes: list[int] | None = None
    conv_groups: int = 4
    hidden_size: int = 200
    num_attention_heads: int = 10
    mlp_ratio: float = 4.0
    encoder_layers: int = 12
    decoder_layers: int = 3
    code_dim: int = 128
    scale_mean_range: list[float] | None = None
    scale_std_range: list[float] | None = None
    quantizer_loss_weight: float = 1.0
    amplitude_loss_weight: float = 1.0
    phase_loss_weight: float = 1.0
    phase_norm_weight: float = 0.1
    layer_norm_eps: float = 1e-5
    qk_norm_eps: float = 1e-6

    def __post_init__(self):  # lists as lists (JSON may give tuples), None (or empty) = the default
        self.conv_kernel_sizes = [list(k) for k in (self.conv_kernel_sizes or [[21, 9], [15, 7], [9, 5], [5, 3]])]
        self.conv_pool_sizes = list(self.conv_pool_sizes or [2, 4])
        self.scale_mean_range = list(self.scale_mean_range or [-1.0, 11.0])
        self.scale_std_range = list(self.scale_std_range or [0.0, 3.0])


def validate_config(config: NeuroRVQConfig) -> None:
    """Raise `ValueError` naming the first invalid field the released design reads (and any mdct-only field set)."""
    check_config_fields(
        config,
        positive_ints=("conv_channels", "conv_groups", "hidden_size", "num_attention_heads", "encoder_layers",
                       "decoder_layers", "code_dim"),
        positive=("mlp_ratio", "layer_norm_eps", "qk_norm_eps"),
        non_negative=("quantizer_loss_weight", "amplitude_loss_weight", "phase_loss_weight", "phase_norm_weight"),
        ranges=("scale_mean_range", "scale_std_range"),
    )
    if config.noise_filling_levels is not None:
        raise ValueError("NeuroRVQConfig.noise_filling_levels belongs to the mdct design (the released design "
                         "restores amplitude with decode(normalize_phase=True))")
    if float(config.difference_loss_weight):
        raise ValueError("NeuroRVQConfig.difference_loss_weight belongs to the mdct design (its refiner); the "
                         "released design's losses are its own")
    if not config.conv_kernel_sizes or any(
        len(k) != len(config.conv_pool_sizes) or any(not isinstance(s, int) or s <= 0 or s % 2 == 0 for s in k)
        for k in config.conv_kernel_sizes
    ):
        raise ValueError(
            "NeuroRVQConfig.conv_kernel_sizes must list, per scale, one odd positive kernel size per conv stage "
            f"({len(config.conv_pool_sizes)} stages), got {config.conv_kernel_sizes!r}"
        )
    pool = 1
    for p in config.conv_pool_sizes:
        if not isinstance(p, int) or p <= 0:
            raise ValueError(f"NeuroRVQConfig.conv_pool_sizes must be positive integers, got {config.conv_pool_sizes!r}")
        pool *= p
    if config.patch_size % pool:
        raise ValueError(f"NeuroRVQConfig.patch_size ({config.patch_size}) must be divisible by prod(conv_pool_sizes) "
                         f"({pool})")
    if config.conv_channels % config.conv_groups:
        raise ValueError(f"NeuroRVQConfig.conv_groups ({config.conv_groups}) must divide conv_channels "
                         f"({config.conv_channels})")
    if config.patch_size // pool * config.conv_channels != config.hidden_size:
        raise ValueError(
            f"NeuroRVQConfig.hidden_size ({config.hidden_size}) must equal patch_size / prod(conv_pool_sizes) * "
            f"conv_channels = {config.patch_size // pool * config.conv_channels}"
        )
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"NeuroRVQConfig.num_attention_heads ({config.num_attention_heads}) must divide hidden_size "
                         f"({config.hidden_size})")


# ----------------------------------------------------------------------------------------------------
# Spectrum -> signal
# ----------------------------------------------------------------------------------------------------


def spectrum_to_signal(log_amplitude: torch.Tensor, phase_sin: torch.Tensor, phase_cos: torch.Tensor,
                       mean: torch.Tensor, std: torch.Tensor, normalize_phase: bool = False) -> torch.Tensor:
    """Per-patch inverse FFT: z-scored log-amplitude and phase [B, N, P] + per-token stats [B, N] -> signal [B, N, P].

    amplitude = expm1(log_amplitude * std + mean); signal = Re(ifft(amplitude * (cos + i sin))). The phase heads
    predict E[cos], E[sin]: where the phase is uncertain their norm shrinks, which minimises the MSE but lowers
    the amplitude. `normalize_phase=True` keeps only their direction (realistic amplitude, higher MSE).
    """
    amplitude = torch.expm1(log_amplitude * std[..., None] + mean[..., None])
    if normalize_phase:
        norm = torch.sqrt(phase_cos ** 2 + phase_sin ** 2).clamp(min=1e-6)
        phase_cos, phase_sin = phase_cos / norm, phase_sin / norm
    spectrum = torch.complex(amplitude * phase_cos, amplitude * phase_sin)
    return torch.fft.ifft(spectrum, dim=-1).real


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


class NeuroRVQAttention(nn.Module):
    """Multi-head self-attention with bias-free qkv plus (q_bias, 0, v_bias), per-head q/k LayerNorm."""

    def __init__(self, config: NeuroRVQConfig):
        super().__init__()
        dim, self.num_heads = config.hidden_size, config.num_attention_heads
        head_dim = dim // self.num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.q_norm = nn.LayerNorm(head_dim, eps=config.qk_norm_eps)
        self.k_norm = nn.LayerNorm(head_dim, eps=config.qk_norm_eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, D]; attention_mask [B, 1, 1, N] bool (True = attend) -> [B, N, D]."""
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        q, k = self.q_norm(q).type_as(v), self.k_norm(k).type_as(v)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)  # scale head_dim^-0.5
        return self.proj(rearrange(x, "b h n d -> b n (h d)"))


class NeuroRVQMLP(nn.Module):
    def __init__(self, config: NeuroRVQConfig):
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        self.fc1 = nn.Linear(config.hidden_size, hidden)
        self.fc2 = nn.Linear(hidden, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class NeuroRVQBlock(nn.Module):
    """Pre-LayerNorm transformer block (no LayerScale)."""

    def __init__(self, config: NeuroRVQConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = NeuroRVQAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = NeuroRVQMLP(config)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attention_mask)
        return x + self.mlp(self.norm2(x))


class NeuroRVQConvBranch(nn.Module):
    """One scale of the temporal convolution: two (conv -> GroupNorm -> GELU -> avg-pool) stages along time."""

    def __init__(self, config: NeuroRVQConfig, kernel_sizes: Sequence[int]):
        super().__init__()
        channels = config.conv_channels
        self.pool_sizes = config.conv_pool_sizes
        self.groups = config.conv_groups
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else channels, channels, kernel_size=(1, k), padding=(0, k // 2))
            for i, k in enumerate(kernel_sizes)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(self.groups, channels) for _ in kernel_sizes)

    def group_norm(self, x: torch.Tensor, norm: nn.GroupNorm, mask: torch.Tensor | None) -> torch.Tensor:
        """GroupNorm over the whole window, as released; with a mask, statistics come from real tokens only."""
        if mask is None:
            return norm(x)
        b, c, n, t = x.shape
        grouped = x.reshape(b, self.groups, c // self.groups, n, t)
        weights = mask.reshape(b, 1, 1, n, 1).to(x.dtype).expand_as(grouped)
        count = weights.sum(dim=(2, 3, 4), keepdim=True)
        mean = (grouped * weights).sum(dim=(2, 3, 4), keepdim=True) / count
        var = (((grouped - mean) ** 2) * weights).sum(dim=(2, 3, 4), keepdim=True) / count
        x = ((grouped - mean) / torch.sqrt(var + norm.eps)).reshape(b, c, n, t)
        return x * norm.weight.view(1, c, 1, 1) + norm.bias.view(1, c, 1, 1)

    def forward(self, patches: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """patches [B, 1, N, P] -> features [B, N, D] (flattened time-major: index = t * channels + c)."""
        x = patches
        for conv, norm, pool in zip(self.convs, self.norms, self.pool_sizes):
            x = F.avg_pool2d(F.gelu(self.group_norm(conv(x), norm, mask)), kernel_size=(1, pool))
        return rearrange(x, "b c n t -> b n (t c)")


class NeuroRVQTransformer(nn.Module):
    """CLS token + spatial (channel) and temporal (patch) embeddings + shared blocks, run on all scales at once.

    The S scales are stacked along the batch axis ([S*B, 1 + N, D]) and the blocks run on groups of about
    `ENCODER_PASS_TOKENS` tokens of it at a time: every block sees the same rows either way (each sequence is
    computed on its own), but a group's activations stay in the CPU caches from one block to the next, which
    makes the elementwise work (norms, GELU, residual adds) several times cheaper than on the whole stack.
    `sequences_per_pass` sets the group size instead (B = one pass per scale, as the released code runs).
    """

    def __init__(self, config: NeuroRVQConfig, num_layers: int):
        super().__init__()
        dim = config.hidden_size
        self.max_patches = config.max_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.spatial_embed = nn.Parameter(torch.zeros(len(config.channel_vocabulary) + 1, dim))
        self.temporal_embed = nn.Parameter(torch.zeros(config.max_patches, dim))
        self.layers = nn.ModuleList(NeuroRVQBlock(config, i) for i in range(num_layers))
        self.scale_norms = nn.ModuleList(
            nn.LayerNorm(dim, eps=config.layer_norm_eps) for _ in range(config.num_scales)
        )
        self.sequences_per_pass: int | None = None  # None: about ENCODER_PASS_TOKENS tokens per pass

    def forward(self, tokens: torch.Tensor, channel_indices: torch.Tensor, num_patches: int,
                token_mask: torch.Tensor | None) -> torch.Tensor:
        """tokens [S, B, N, D] (N = C * A, channel-major); channel_indices [B, C]; token_mask [B, N] -> [S, B, N, D]."""
        num_scales, batch, n, dim = tokens.shape
        spatial = self.spatial_embed[channel_indices.repeat_interleave(num_patches, dim=1)]  # [B, N, D]
        temporal_index = torch.arange(self.max_patches - num_patches, self.max_patches, device=tokens.device)
        temporal = self.temporal_embed[temporal_index].repeat(channel_indices.shape[1], 1)  # [N, D]
        cls = (self.cls_token[0] + self.spatial_embed[0]).expand(num_scales, batch, 1, dim)  # CLS takes row 0
        x = torch.cat((cls, tokens + spatial + temporal), dim=2)
        attention_mask = None
        if token_mask is not None:
            keep = F.pad(token_mask, (1, 0), value=True)  # CLS is always real
            attention_mask = keep[:, None, None, :].repeat(num_scales, 1, 1, 1)
        x = x.reshape(num_scales * batch, n + 1, dim)
        group = self.sequences_per_pass or max(1, ENCODER_PASS_TOKENS // (n + 1))
        chunks = []
        for start in range(0, num_scales * batch, group):
            xs = x[start:start + group]
            ms = None if attention_mask is None else attention_mask[start:start + group]
            for layer in self.layers:
                xs = layer(xs, ms)
            chunks.append(xs)
        x = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        x = x.reshape(num_scales, batch, n + 1, dim)[:, :, 1:]
        return torch.stack([norm(x[s]) for s, norm in enumerate(self.scale_norms)])


class NeuroRVQEncoder(nn.Module):
    """Multi-scale temporal convolution -> shared transformer -> per-scale projection to code space."""

    def __init__(self, config: NeuroRVQConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.branches = nn.ModuleList(NeuroRVQConvBranch(config, k) for k in config.conv_kernel_sizes)
        self.transformer = NeuroRVQTransformer(config, config.encoder_layers)
        self.to_code = nn.ModuleList(
            nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.Tanh(),
                          nn.Linear(config.hidden_size, config.code_dim))
            for _ in range(config.num_scales)
        )

    def forward(self, input_values: torch.Tensor, channel_indices: torch.Tensor,
                token_mask: torch.Tensor | None) -> torch.Tensor:
        """input_values [B, C, T] microvolts -> code-space vectors [S, B, C * A, code_dim]."""
        num_patches = input_values.shape[-1] // self.patch_size
        patches = rearrange(input_values, "b c (a p) -> b 1 (c a) p", p=self.patch_size)
        tokens = torch.stack([branch(patches, token_mask) for branch in self.branches])
        hidden = self.transformer(tokens, channel_indices, num_patches, token_mask)
        # the code projection runs in fp32, as released (autocast off)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return torch.stack([proj(hidden[s].float()) for s, proj in enumerate(self.to_code)])


class NeuroRVQDecoder(nn.Module):
    """Per-scale code embedding -> shared transformer -> FFT log-amplitude and phase heads."""

    def __init__(self, config: NeuroRVQConfig):
        super().__init__()
        dim, out = config.hidden_size, config.patch_size
        self.code_embed = nn.ModuleList(nn.Linear(config.code_dim, dim) for _ in range(config.num_scales))
        self.transformer = NeuroRVQTransformer(config, config.decoder_layers)
        features = config.num_scales * dim
        self.amplitude_head = nn.Sequential(nn.Linear(features, dim), nn.GELU(), nn.Linear(dim, out))
        self.phase_sin_head = nn.Sequential(nn.Linear(features, dim), nn.Tanh(), nn.Linear(dim, out), nn.Tanh())
        self.phase_cos_head = nn.Sequential(nn.Linear(features, dim), nn.Tanh(), nn.Linear(dim, out), nn.Tanh())

    def forward(self, quantized: torch.Tensor, channel_indices: torch.Tensor, num_patches: int,
                token_mask: torch.Tensor | None):
        """quantized [S, B, N, code_dim] -> (log_amplitude, phase_sin, phase_cos), each [B, N, patch_size]."""
        tokens = torch.stack([embed(quantized[s]) for s, embed in enumerate(self.code_embed)])
        hidden = self.transformer(tokens, channel_indices, num_patches, token_mask)
        features = rearrange(hidden, "s b n d -> b n (s d)")
        return self.amplitude_head(features), self.phase_sin_head(features), self.phase_cos_head(features)


# ----------------------------------------------------------------------------------------------------
# The design
# ----------------------------------------------------------------------------------------------------


class ReleasedDesign(nn.Module):
    """Encode / decode / forward of the released design, on inputs `NeuroRVQTokenizer` has checked.

    Parts (registered on the tokenizer under these names, the state-dict keys of saved models): `encoder`
    ([`NeuroRVQEncoder`]), `quantizers` (one residual quantizer per scale), `decoder` ([`NeuroRVQDecoder`]).
    """

    config_fields = ReleasedConfig
    validate_config = staticmethod(validate_config)
    part_names = ("encoder", "quantizers", "decoder")  # in the order they are built
    # what callers may ask (NeuroRVQConfig / NeuroRVQTokenizer properties of the same meaning)
    lapped_frames = False  # patches are independent: a recording is coded window by window
    bounded_windows = True  # the temporal embedding has max_patches rows: a call takes at most max_patches tokens
    scales_are_frequency_bands = False
    fixed_dtype = None  # the weights' dtype (autocast / half precision apply)

    @staticmethod
    def num_scales(config: NeuroRVQConfig) -> int:
        """One conv branch, one quantizer and one decoder input per scale."""
        return len(config.conv_kernel_sizes)

    @staticmethod
    def slow_scales(config: NeuroRVQConfig) -> list[bool]:
        """No scale is limited to slow waves: every scale sees the whole spectrum."""
        return [False] * len(config.conv_kernel_sizes)

    def __init__(self, config: NeuroRVQConfig):
        super().__init__()
        self.config = config
        self.encoder = NeuroRVQEncoder(config)  # (this order: a seed gives the same weights as before the split)
        self.quantizers = build_quantizers(config, [config.code_dim] * config.num_scales)
        self.decoder = NeuroRVQDecoder(config)

    @property
    def device(self) -> torch.device:
        return module_device(self)

    @property
    def uses_scale_tokens(self) -> bool:
        return self.config.amplitude_side_information == "scale_tokens"

    # ---- amplitude side information ------------------------------------------------------------------

    def _scale_ranges(self) -> list[tuple[float, float]]:
        return [(float(low), float(high)) for low, high in (self.config.scale_mean_range, self.config.scale_std_range)]

    def quantize_scales(self, mean: torch.Tensor, std: torch.Tensor) -> torch.LongTensor:
        """Per-patch log-amplitude (mean, std) [B, N] -> scale codes [B, 2, N]."""
        return quantize_scales((mean, std), self._scale_ranges(), self.config.num_scale_tokens)

    def dequantize_scales(self, scale_codes: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale codes [B, 2, ...] -> (mean, std) [B, ...] log-amplitude statistics (std at least 1e-4)."""
        mean, std = dequantize_scales(scale_codes, self._scale_ranges(), self.config.num_scale_tokens)
        return mean, std.clamp(min=1e-4)

    def spectrum_statistics(self, patches: torch.Tensor, token_mask: torch.Tensor | None):
        """patches [B, N, P] microvolts -> z-scored log1p|FFT|, sin, cos [B, N, P], per-token stats [B, N] and
        scale codes [B, 2, N] (None with window statistics)."""
        spectrum = torch.fft.fft(patches.float(), dim=-1)
        log_amplitude = torch.log1p(spectrum.abs())
        angle = torch.angle(spectrum)
        if self.uses_scale_tokens:
            scale_codes = self.quantize_scales(log_amplitude.mean(dim=-1), log_amplitude.var(dim=-1).clamp(min=1e-8).sqrt())
            mean, std = self.dequantize_scales(scale_codes)
        else:
            scale_codes = None
            _, mean, std = masked_standardize(log_amplitude, token_mask)
            mean, std = (t[:, None].expand(patches.shape[:2]) for t in (mean, std))
        zscored = (log_amplitude - mean[..., None]) / std[..., None]
        return zscored, torch.sin(angle), torch.cos(angle), mean, std, scale_codes

    def token_statistics(self, batch: int, channels: int, num_patches: int, log_amplitude_mean,
                         log_amplitude_std, scale_codes) -> tuple[torch.Tensor, torch.Tensor]:
        """Side information given to `decode` -> per-token log-amplitude (mean, std), each [B, C * A]."""
        n = channels * num_patches
        if scale_codes is not None:
            if not self.uses_scale_tokens:
                raise ValueError("scale_codes given, but this model uses window_statistics: pass "
                                 "log_amplitude_mean and log_amplitude_std")
            scale_codes = check_scale_codes(scale_codes, (batch, 2, channels, num_patches),
                                            self.config.num_scale_tokens, self.device)
            return self.dequantize_scales(scale_codes.reshape(batch, 2, n))
        if log_amplitude_mean is None or log_amplitude_std is None:
            needed = "scale_codes" if self.uses_scale_tokens else "log_amplitude_mean and log_amplitude_std"
            raise ValueError(f"decode needs {needed} (from encode) to restore absolute amplitude")
        mean = torch.as_tensor(log_amplitude_mean, dtype=torch.float32, device=self.device)
        std = torch.as_tensor(log_amplitude_std, dtype=torch.float32, device=self.device)
        if mean.numel() == batch:  # one pair per window
            return mean.reshape(batch, 1).expand(batch, n), std.reshape(batch, 1).expand(batch, n)
        if mean.numel() == batch * n:  # one pair per patch
            return mean.reshape(batch, n), std.reshape(batch, n)
        raise ValueError(f"log_amplitude_mean must have shape [B] or [B, C, A], got {tuple(mean.shape)}")

    # ---- encode / decode -----------------------------------------------------------------------------

    def quantize(self, latents: torch.Tensor, token_mask: torch.Tensor | None, num_quantizers: int | None,
                 search_precision: str | None = None):
        """latents [S, B, N, D] -> quantized [S, B, N, D], codes [B, S, K, N], loss, usage/perplexity [S, K]."""
        num_scales, batch, n, dim = latents.shape
        flat_mask = None if token_mask is None else token_mask.reshape(-1)
        outputs = [q(latents[s].reshape(-1, dim), flat_mask, num_quantizers, search_precision)
                   for s, q in enumerate(self.quantizers)]
        quantized = torch.stack([o.quantized.reshape(batch, n, dim) for o in outputs])
        codes = torch.stack([o.codes.reshape(-1, batch, n) for o in outputs]).permute(2, 0, 1, 3)
        loss = torch.stack([o.loss for o in outputs]).sum()
        return quantized, codes, loss, torch.stack([o.usage for o in outputs]), torch.stack([o.perplexity for o in outputs])

    def encode(self, input_values: torch.Tensor, channel_indices: torch.Tensor, patch_mask: torch.Tensor | None,
               num_quantizers: int | None, search_precision: str | None) -> NeuroRVQEncoderOutput:
        """input_values [B, C, A * P] µV on the model's device, channel_indices [B, C], patch_mask [B, C, A] or None
        -> codes [B, S, K', C, A] and the log-amplitude statistics `decode` needs."""
        batch, channels, samples = input_values.shape
        num_patches = samples // self.config.patch_size
        token_mask = None if patch_mask is None else patch_mask.reshape(batch, -1)
        patches = rearrange(input_values, "b c (a p) -> b (c a) p", p=self.config.patch_size)
        _, _, _, mean, std, scale_codes = self.spectrum_statistics(patches, token_mask)
        latents = self.encoder(input_values, channel_indices, token_mask)
        quantized, codes, _, _, _ = self.quantize(latents, token_mask, num_quantizers, search_precision)
        to_patches = lambda t: t.reshape(*t.shape[:-1], channels, num_patches)  # noqa: E731
        return NeuroRVQEncoderOutput(
            codes=codes.reshape(batch, self.config.num_scales, -1, channels, num_patches),
            log_amplitude_mean=to_patches(mean) if self.uses_scale_tokens else mean[:, 0],
            log_amplitude_std=to_patches(std) if self.uses_scale_tokens else std[:, 0],
            scale_codes=None if scale_codes is None else to_patches(scale_codes),
            patch_mask=patch_mask,
            quantized=rearrange(quantized, "s b (c a) d -> b s c a d", c=channels),
        )

    def decode_spectrum(self, codes: torch.Tensor, channel_indices: torch.Tensor,
                        token_mask: torch.Tensor | None) -> NeuroRVQSpectrumOutput:
        """Codes [B, S, K', C, A], channel_indices [B, C], token_mask [B, C * A] -> the decoder's z-scored
        log-amplitude and phase, each [B, C, A, patch_size]."""
        channels, num_patches = codes.shape[3], codes.shape[4]
        codes = codes.to(self.device)
        quantized = torch.stack([
            q.decode(rearrange(codes[:, s], "b k c a -> k b (c a)")) for s, q in enumerate(self.quantizers)
        ])
        log_amplitude, sin, cos = self.decoder(quantized, channel_indices, num_patches, token_mask)
        shape = dict(c=channels)
        return NeuroRVQSpectrumOutput(
            log_amplitude=rearrange(log_amplitude, "b (c a) p -> b c a p", **shape),
            phase_sin=rearrange(sin, "b (c a) p -> b c a p", **shape),
            phase_cos=rearrange(cos, "b (c a) p -> b c a p", **shape),
        )

    def decode(self, codes: torch.Tensor, channel_indices: torch.Tensor, token_mask: torch.Tensor | None, *,
               log_amplitude_mean=None, log_amplitude_std=None, scale_codes=None, normalize_phase: bool = False,
               **other_design_options) -> torch.Tensor:
        """Codes [B, S, K', C, A] + their side information -> EEG [B, C, A * P] µV (see `NeuroRVQTokenizer.decode`;
        `other_design_options`, the mdct design's noise filling and chunking, do not apply here)."""
        batch, channels, num_patches = codes.shape[0], codes.shape[3], codes.shape[4]
        mean, std = self.token_statistics(batch, channels, num_patches, log_amplitude_mean, log_amplitude_std,
                                          scale_codes)
        spectrum = self.decode_spectrum(codes, channel_indices, token_mask)
        flat = [rearrange(t, "b c a p -> b (c a) p").float() for t in spectrum.values()]
        signal = spectrum_to_signal(*flat, mean, std, normalize_phase=normalize_phase)
        return rearrange(signal, "b (c a) p -> b c (a p)", c=channels)

    # ---- training forward ----------------------------------------------------------------------------

    def forward(self, input_values: torch.Tensor, channel_indices: torch.Tensor,
                token_mask: torch.Tensor | None) -> NeuroRVQOutput:
        """input_values [B, C, A * P] µV on the model's device, token_mask [B, C * A] -> encode, quantise, decode
        and the loss terms (see [`NeuroRVQOutput`])."""
        config = self.config
        batch, channels, samples = input_values.shape
        num_patches = samples // config.patch_size
        patches = rearrange(input_values, "b c (a p) -> b (c a) p", p=config.patch_size).float()
        target_amplitude, target_sin, target_cos, mean, std, scale_codes = self.spectrum_statistics(patches, token_mask)
        latents = self.encoder(input_values, channel_indices, token_mask)
        quantized, codes, quantizer_loss, usage, perplexity = self.quantize(latents, token_mask, None)
        log_amplitude, sin, cos = self.decoder(quantized, channel_indices, num_patches, token_mask)
        log_amplitude, sin, cos = log_amplitude.float(), sin.float(), cos.float()

        signal = spectrum_to_signal(log_amplitude, sin, cos, mean, std)  # [B, N, P] microvolts
        zscored_input, _, _ = masked_standardize(patches, token_mask)
        zscored_reconstruction, _, _ = masked_standardize(signal, token_mask)

        amplitude_loss = masked_mean((log_amplitude - target_amplitude) ** 2, token_mask)
        predicted_phase = torch.stack((cos, sin), dim=-1)
        target_phase = torch.stack((target_cos, target_sin), dim=-1)
        phase_loss = (1.0 - masked_mean(F.cosine_similarity(predicted_phase, target_phase, dim=-1), token_mask)
                      + config.phase_norm_weight * masked_mean((sin ** 2 + cos ** 2 - 1) ** 2, token_mask))
        time_loss = masked_mean((zscored_reconstruction - zscored_input) ** 2, token_mask)
        loss = (config.quantizer_loss_weight * quantizer_loss + config.amplitude_loss_weight * amplitude_loss
                + config.phase_loss_weight * phase_loss + config.time_loss_weight * time_loss)

        to_signal = lambda t: rearrange(t, "b (c a) p -> b c (a p)", c=channels)  # noqa: E731
        to_patches = lambda t: rearrange(t, "b (c a) p -> b c a p", c=channels)  # noqa: E731
        return NeuroRVQOutput(
            loss=loss,
            quantizer_loss=quantizer_loss,
            amplitude_loss=amplitude_loss,
            phase_loss=phase_loss,
            time_loss=time_loss,
            reconstruction=to_signal(signal),
            zscored_input=to_signal(zscored_input),
            zscored_reconstruction=to_signal(zscored_reconstruction),
            codes=codes.reshape(batch, config.num_scales, -1, channels, num_patches),
            scale_codes=None if scale_codes is None else scale_codes.reshape(batch, 2, channels, num_patches),
            codebook_usage=usage,
            codebook_perplexity=perplexity,
            spectrum=NeuroRVQSpectrumOutput(log_amplitude=to_patches(log_amplitude), phase_sin=to_patches(sin),
                                            phase_cos=to_patches(cos)),
        )
