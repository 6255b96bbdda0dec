"""NeuroRVQ: a multi-scale EEG tokenizer (Barmpas et al., arXiv 2510.13068) as a transformers model.

Two token designs share one API (`encode` -> codes [B, S, K, C, A] + scale codes, `decode` -> microvolts):

- `released` (exact with the released code): EEG [B, C, T] microvolts at 200 Hz is cut into one-second patches
  (C x A token positions, channel-major). A four-branch temporal convolution turns every patch into one feature
  vector per scale; one shared transformer encodes the four scales (batched as one call); each scale is
  quantised by its own residual quantizer (K stages). The decoder embeds each scale's quantised vectors, runs
  one shared transformer, and predicts per patch the z-scored log-amplitude and the phase (sin, cos) of its
  200-point FFT; an inverse FFT turns them back into microvolts, given the window's log-amplitude statistics.
- `mdct` (the improved design): every channel's one-second patches are frames of a lapped transform (MDCT,
  50% overlap, `transform.py`). Two gains per patch (slow and fast coefficients) are the scale tokens; each
  "scale" is a frequency band of the gain-normalised frame, coded by its own residual quantizer (codebooks by
  k-means, `codebook_fitting.py`). Decoding looks the codewords up, lets an optional transformer over all
  channels and patches of the window correct them (the refiner), applies the gains and overlap-adds the
  frames: real amplitude, and no seams at patch edges.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .checks import check_codes_not_empty, check_input_values
from .configuration_neurorvq import NeuroRVQConfig
from .loading import BUNDLED, load_pretrained
from .quantization import ResidualVectorQuantizer, check_search_precision, code_statistics
from .transform import LappedTransform

ENCODER_PASS_TOKENS = 2048  # tokens per pass through the encoder blocks (see NeuroRVQTransformer)

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
    """Decoder heads, per patch: [B, C, A, patch_size] each.

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
        spectrum: the decoder's [`NeuroRVQSpectrumOutput`].
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
# Helpers on masked windows
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


class NeuroRVQRefiner(nn.Module):
    """`mdct` design, joint decoder: a transformer over every (channel, patch) of a window that corrects the
    dequantised, gain-normalised MDCT frames with what the other channels and seconds carry (neighbouring
    electrodes see the same sources, so their quantisation errors are partly predictable). Its output layer
    starts at zero: an untrained refiner decodes exactly as the codebooks alone."""

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
# The model
# ----------------------------------------------------------------------------------------------------


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


# Tokenizers shipped inside the package, loadable offline by name.
BUNDLED_MODELS = {name: folder for name, folder in BUNDLED.items() if folder.parent.parent.name == "tokenizer"}

# mdct design: `decode` synthesises this many patches at a time (rounded up to whole refiner windows), so that its
# memory beyond the returned signal does not grow with the length (an hour of 19 channels would otherwise hold
# about ten float copies of [B, C, A, P] at once, near 1 GB)
DECODE_CHUNK_PATCHES = 256


class NeuroRVQTokenizer(NeuroRVQPreTrainedModel):
    """The NeuroRVQ EEG tokenizer: EEG in microvolts <-> codes [B, S, K, C, A].

    Example:

    ```python
    >>> tokenizer = NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small")  # mdct design, bundled
    >>> encoded = tokenizer.encode(eeg_microvolts, channel_names)  # eeg [B, C, A * 200] at 200 Hz
    >>> eeg = tokenizer.decode(encoded.codes, channel_names, scale_codes=encoded.scale_codes)  # [B, C, A * 200] µV
    ```
    """

    def __init__(self, config: NeuroRVQConfig):
        super().__init__(config)
        is_mdct = config.token_design == "mdct"
        code_dims = config.band_widths if is_mdct else [config.code_dim] * config.num_scales
        if is_mdct:
            self.transform = LappedTransform(config.patch_size)  # fixed: no weights
            self.refiner = NeuroRVQRefiner(config) if config.refiner_layers else None
        else:
            self.encoder = NeuroRVQEncoder(config)
        self.quantizers = nn.ModuleList(
            ResidualVectorQuantizer(
                config.num_quantizers, config.codebook_size, code_dim, config.quantizer_type,
                config.ema_decay, config.kmeans_iters, config.commitment_weight, config.codebook_weight,
                config.dead_code_threshold,
            )
            for code_dim in code_dims
        )
        if not is_mdct:
            self.decoder = NeuroRVQDecoder(config)
        self._vocabulary_index = {name: i for i, name in enumerate(config.channel_vocabulary)}
        self.post_init()

    @property
    def device(self) -> torch.device:
        """The device of the weights, or of the codebooks (the mdct design has buffers only)."""
        return next(iter(self.state_dict().values())).device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.is_mdct else super().dtype

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus the bundled names (e.g. `"neurorvq/tokenizer-small"`, offline)."""
        return load_pretrained(super().from_pretrained, pretrained_model_name_or_path, cls.config_class.model_type,
                               *args, **kwargs)

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
        if channels * num_patches > self.config.max_patches and not self.is_mdct:  # mdct frames are local: any length
            raise ValueError(f"too many tokens: {channels} channels x {num_patches} patches = {channels * num_patches} "
                             f"> max_patches={self.config.max_patches}; use shorter windows or fewer channels")
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

    # ---- encode / decode ----------------------------------------------------------------------------

    @property
    def uses_scale_tokens(self) -> bool:
        return self.config.amplitude_side_information == "scale_tokens"

    @property
    def is_mdct(self) -> bool:
        return self.config.token_design == "mdct"

    def _scale_grid(self, which: int) -> tuple[float, float]:
        if self.is_mdct:  # both streams are log gains
            low, high = self.config.log_gain_range
        else:
            low, high = (self.config.scale_mean_range, self.config.scale_std_range)[which]
        return float(low), float(high)

    def quantize_scales(self, mean: torch.Tensor, std: torch.Tensor) -> torch.LongTensor:
        """Per-patch log-amplitude (mean, std) [B, N] -> scale codes [B, 2, N] on the uniform grid."""
        levels = self.config.num_scale_tokens - 1
        codes = []
        for which, values in enumerate((mean, std)):
            low, high = self._scale_grid(which)
            codes.append(torch.round((values.clamp(low, high) - low) / (high - low) * levels).long())
        return torch.stack(codes, dim=1)

    def dequantize_scales(self, scale_codes: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale codes [B, 2, ...] -> (mean, std) [B, ...] log-amplitude statistics."""
        levels = self.config.num_scale_tokens - 1
        values = []
        for which in range(2):
            low, high = self._scale_grid(which)
            values.append(low + scale_codes[:, which].float() * (high - low) / levels)
        if self.is_mdct:
            return values[0], values[1]  # (log gain of the slow band, of the fast band)
        return values[0], values[1].clamp(min=1e-4)

    def _spectrum_statistics(self, patches: torch.Tensor, token_mask: torch.Tensor | None):
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

    def _quantize(self, latents: torch.Tensor, token_mask: torch.Tensor | None, num_quantizers: int | None,
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

    @torch.no_grad()
    def encode(self, input_values: torch.Tensor, channel_names, padding_mask: torch.Tensor | None = None,
               num_quantizers: int | None = None, search_precision: str | None = None) -> NeuroRVQEncoderOutput:
        """Tokenise EEG.

        Args:
            input_values: [B, C, T] float microvolts at `config.sampling_rate`, T a multiple of
                `config.patch_size`, C * T / patch_size <= `config.max_patches` (released design; the mdct design
                encodes any length).
            channel_names: C vocabulary names (or one list per batch item).
            padding_mask: optional [B, C, T], 1 = real sample, 0 = padding.
            num_quantizers: use the first K' <= K stages of every scale.
            search_precision: nearest-codeword search, `"exact"` (fp32, the released arithmetic) or
                `"bf16-rescore"` (bf16 candidates rescored exactly, for CPUs with fast bf16 matrix products: the
                same codes, see `quantization.py`). `None`: each quantizer's `search_precision` (default exact).

        Returns:
            [`NeuroRVQEncoderOutput`] with `codes` [B, S, K', C, A] and the window statistics that
            [`decode`] needs to return microvolts.
        """
        input_values = check_input_values(input_values, padding_mask, channel_names)
        channel_indices, patch_mask = self._check_input(input_values, channel_names, padding_mask)
        batch, channels, samples = input_values.shape
        num_patches = samples // self.config.patch_size
        if num_quantizers is not None and not 1 <= num_quantizers <= self.config.num_quantizers:
            raise ValueError(f"num_quantizers must be in [1, {self.config.num_quantizers}], got {num_quantizers}")
        if search_precision is not None:
            check_search_precision(search_precision)
        if self.is_mdct:
            return self._encode_mdct(input_values.to(self.device).float(), patch_mask, num_quantizers, search_precision)
        token_mask = None if patch_mask is None else patch_mask.reshape(batch, -1)
        input_values = input_values.to(self.device)
        patches = rearrange(input_values, "b c (a p) -> b (c a) p", p=self.config.patch_size)
        _, _, _, mean, std, scale_codes = self._spectrum_statistics(patches, token_mask)
        latents = self.encoder(input_values, channel_indices, token_mask)
        quantized, codes, _, _, _ = self._quantize(latents, token_mask, num_quantizers, search_precision)
        to_patches = lambda t: t.reshape(*t.shape[:-1], channels, num_patches)  # noqa: E731
        return NeuroRVQEncoderOutput(
            codes=codes.reshape(batch, self.config.num_scales, -1, channels, num_patches),
            log_amplitude_mean=to_patches(mean) if self.uses_scale_tokens else mean[:, 0],
            log_amplitude_std=to_patches(std) if self.uses_scale_tokens else std[:, 0],
            scale_codes=None if scale_codes is None else to_patches(scale_codes),
            patch_mask=patch_mask,
            quantized=rearrange(quantized, "s b (c a) d -> b s c a d", c=channels),
        )

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
        if c * a > self.config.max_patches and not self.is_mdct:
            raise ValueError(f"too many tokens: {c} channels x {a} patches > max_patches={self.config.max_patches}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.config.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")

    # ---- the mdct design -----------------------------------------------------------------------------

    def _gains(self, coefficients: torch.Tensor) -> torch.Tensor:
        """MDCT coefficients [..., P] -> log RMS of the slow (< gain_split) and fast coefficients [..., 2]."""
        split = self.config.gain_split
        power = torch.stack((coefficients[..., :split].pow(2).mean(-1), coefficients[..., split:].pow(2).mean(-1)), -1)
        return 0.5 * torch.log(power.clamp(min=1e-12))

    def _apply_gains(self, values: torch.Tensor, log_gains: torch.Tensor, divide: bool) -> torch.Tensor:
        """Scale coefficients [..., P] by the gains exp(log_gains [..., 2]) (or divide by them)."""
        split, size = self.config.gain_split, self.config.patch_size
        gain = torch.exp(log_gains).repeat_interleave(torch.tensor([split, size - split], device=values.device), dim=-1)
        return values / gain if divide else values * gain

    def mdct_shapes(self, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        """MDCT coefficients [B, C, A, P] (µV) -> gain-normalised coefficients [B, C, A, P] (what the band
        quantizers code) and the scale codes [B, 2, C, A] (the two quantised log gains)."""
        log_gains = self._gains(coefficients)  # [B, C, A, 2]
        scale_codes = self.quantize_scales(log_gains[..., 0], log_gains[..., 1])  # [B, 2, C, A]
        quantized_gains = torch.stack(self.dequantize_scales(scale_codes), dim=-1)
        return self._apply_gains(coefficients, quantized_gains, divide=True), scale_codes

    def _bands(self) -> list[tuple[int, int]]:
        edges = self.config.band_edges
        return list(zip(edges[:-1], edges[1:]))

    def _encode_mdct(self, input_values: torch.Tensor, patch_mask, num_quantizers,
                     search_precision: str | None = None) -> NeuroRVQEncoderOutput:
        """input_values [B, C, A * P] µV -> codes [B, S, K', C, A] and scale codes [B, 2, C, A]."""
        shapes, scale_codes = self.mdct_shapes(self.transform(input_values))
        codes = self._band_codes(shapes, num_quantizers, search_precision)
        log_mean, log_std = self.dequantize_scales(scale_codes)
        return NeuroRVQEncoderOutput(codes=codes, log_amplitude_mean=log_mean, log_amplitude_std=log_std,
                                     scale_codes=scale_codes, patch_mask=patch_mask,
                                     quantized=self._band_shapes(codes).unsqueeze(1))  # [B, 1, C, A, P]

    def _band_codes(self, shapes: torch.Tensor, num_quantizers: int | None = None,
                    search_precision: str | None = None) -> torch.LongTensor:
        """Gain-normalised frames [B, C, A, P] -> codes [B, S, K', C, A] (each band by its own quantizer)."""
        lead = shapes.shape[:3]
        codes = [q.encode(shapes[..., low:high].reshape(-1, high - low), num_quantizers, search_precision).reshape(-1, *lead)
                 for (low, high), q in zip(self._bands(), self.quantizers)]  # S x [K', B, C, A]
        return torch.stack(codes).permute(2, 0, 1, 3, 4).contiguous()

    def _band_shapes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, S, K', C, A] -> dequantised gain-normalised frames [B, C, A, P]."""
        return torch.cat([q.decode(codes[:, s].movedim(1, 0)) for s, q in enumerate(self.quantizers)], dim=-1)

    def _decode_window(self, channels: int) -> int:
        """Patches per refiner window (its context: at most max_patches tokens over `channels` channels, as in
        training); noise filling draws per window and chunked decoding works in whole windows too."""
        return max(1, self.config.max_patches // channels)

    def _refined_shapes(self, shapes: torch.Tensor, log_gains: torch.Tensor, channel_indices: torch.Tensor,
                        token_mask: torch.Tensor | None) -> torch.Tensor:
        """Dequantised frames [B, C, A, P] + log gains [B, C, A, 2] -> the refiner's corrected frames (the same
        frames without a refiner). Windows start at the first given patch (patch 0, or a chunk of whole windows)."""
        if self.refiner is None:
            return shapes
        batch, channels, num_patches, _ = shapes.shape
        step = self._decode_window(channels)
        mask = None if token_mask is None else token_mask.reshape(batch, channels, num_patches)
        return torch.cat([
            self.refiner(shapes[:, :, a:a + step], log_gains[:, :, a:a + step], channel_indices,
                         None if mask is None else mask[:, :, a:a + step].reshape(batch, -1))
            for a in range(0, num_patches, step)], dim=2)

    def _band_power(self, shapes: torch.Tensor) -> torch.Tensor:
        """Frames [..., P] -> every coefficient's band mean power [..., P] (mean of the squares over its band)."""
        return torch.cat([shapes[..., low:high].pow(2).mean(-1, keepdim=True).expand(*shapes.shape[:-1], high - low)
                          for low, high in self._bands()], dim=-1)

    def _fill_noise(self, shapes: torch.Tensor, where: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Decoded frames [B, C, A, P] + Gaussian noise of variance `noise_filling_levels[k]` x the band mean
        power of coefficient k in that frame, in the frames `where` ([B, C, A] bool) is True: the energy the codes
        did not keep, as random detail. The noise is drawn one refiner window ([B, C, window, P]) at a time, in
        patch order from the first given patch (patch 0 or a chunk of whole windows), so that a chunked decoding
        draws the same numbers as a whole one."""
        levels = torch.tensor(self.config.noise_filling_levels, dtype=shapes.dtype, device=shapes.device)
        batch, channels, num_patches, size = shapes.shape
        step = self._decode_window(channels)
        noise = torch.cat([
            torch.randn((batch, channels, min(step, num_patches - a), size), generator=generator, dtype=shapes.dtype,
                        device="cpu" if generator is None else generator.device)
            for a in range(0, num_patches, step)], dim=2).to(shapes.device)
        return shapes + (levels * self._band_power(shapes)).sqrt() * noise * where[..., None]

    def _decode_chunk(self, chunk_patches: int | None, channels: int) -> int:
        """Patches per synthesis chunk: `chunk_patches` (default `DECODE_CHUNK_PATCHES`) rounded up to whole
        refiner windows, so that the refiner sees the same windows as in a whole decoding."""
        if chunk_patches is None:
            chunk_patches = DECODE_CHUNK_PATCHES
        elif isinstance(chunk_patches, bool) or not isinstance(chunk_patches, int) or chunk_patches < 1:
            raise ValueError(f"chunk_patches must be a positive int (patches per decoded chunk) or None, "
                             f"got {chunk_patches!r}")
        step = self._decode_window(channels)
        return -(-chunk_patches // step) * step

    def _synthesis_frames(self, codes: torch.Tensor, scale_codes: torch.Tensor, channel_indices: torch.Tensor,
                          mask: torch.Tensor | None, where: torch.Tensor | None,
                          generator: torch.Generator | None) -> torch.Tensor:
        """One span of whole refiner windows (from a window's start): codes [B, S, K', C, n], scale codes
        [B, 2, C, n], mask [B, C, n] (True = real) or None, where [B, C, n] (noise filling) or None -> MDCT
        coefficients [B, C, n, P] µV: the refiner's correction (if any), noise filling, the gains."""
        batch, channels, num_patches = codes.shape[0], codes.shape[3], codes.shape[4]
        log_gains = torch.stack(self.dequantize_scales(scale_codes), dim=-1)  # [B, C, n, 2]
        token_mask = None if mask is None else mask.reshape(batch, channels * num_patches)
        shapes = self._refined_shapes(self._band_shapes(codes), log_gains, channel_indices, token_mask)
        if where is not None:
            shapes = self._fill_noise(shapes, where, generator)
        return self._apply_gains(shapes, log_gains, divide=False)

    def _synthesize(self, codes: torch.Tensor, scale_codes: torch.Tensor, channel_indices: torch.Tensor,
                    token_mask: torch.Tensor | None, noise_filling: bool | torch.Tensor = False,
                    generator: torch.Generator | None = None, chunk_patches: int | None = None) -> torch.Tensor:
        """Codes [B, S, K', C, A] + scale codes [B, 2, C, A] (token_mask [B, C * A], True = real) -> EEG
        [B, C, A * P] µV: the refiner's correction (if any), noise filling (if asked and fitted), the gains, and
        the overlap-added inverse MDCT.

        Synthesised in chunks of whole refiner windows (`_decode_chunk`), so memory beyond the result is that of
        about two chunks whatever A. Chunking changes nothing but round-off: the refiner and the noise see the same
        windows in the same order, and a chunk's samples come from its frames and one neighbouring frame on each
        side (`LappedTransform.inverse` with `halo`), with start / stop windows only at the signal's real ends."""
        batch, channels, num_patches = codes.shape[0], codes.shape[3], codes.shape[4]
        chunk, size, device = self._decode_chunk(chunk_patches, channels), self.config.patch_size, self.device
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
            return self._synthesis_frames(codes[..., span].to(device), scale_codes[..., span], channel_indices,
                                          None if mask is None else mask[..., span],
                                          None if where is None else where[..., span], generator)

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

    def decode_spectrum(self, codes: torch.Tensor, channel_names, patch_mask: torch.Tensor | None = None) -> NeuroRVQSpectrumOutput:
        """Codes [B, S, K', C, A] -> the decoder's z-scored log-amplitude and phase, each [B, C, A, patch_size]."""
        if self.is_mdct:
            raise ValueError("decode_spectrum belongs to the released design; the mdct design decodes MDCT frames")
        self._check_codes(codes)
        return self._decode_spectrum(codes, channel_names, patch_mask)

    def _decode_spectrum(self, codes: torch.Tensor, channel_names, patch_mask) -> NeuroRVQSpectrumOutput:
        batch, num_scales, _, channels, num_patches = codes.shape
        channel_indices = self.channel_indices(channel_names, batch, channels)
        codes = codes.to(self.device)
        quantized = torch.stack([
            q.decode(rearrange(codes[:, s], "b k c a -> k b (c a)")) for s, q in enumerate(self.quantizers)
        ])
        token_mask = None if patch_mask is None else patch_mask.to(self.device).bool().reshape(batch, -1)
        log_amplitude, sin, cos = self.decoder(quantized, channel_indices, num_patches, token_mask)
        shape = dict(c=channels)
        return NeuroRVQSpectrumOutput(
            log_amplitude=rearrange(log_amplitude, "b (c a) p -> b c a p", **shape),
            phase_sin=rearrange(sin, "b (c a) p -> b c a p", **shape),
            phase_cos=rearrange(cos, "b (c a) p -> b c a p", **shape),
        )

    def _check_scale_codes(self, scale_codes, batch: int, channels: int, num_patches: int) -> torch.LongTensor:
        """Scale codes as a tensor on the model's device, after checking their shape [B, 2, C, A] and range."""
        scale_codes = torch.as_tensor(scale_codes, device=self.device)
        if tuple(scale_codes.shape) != (batch, 2, channels, num_patches):
            raise ValueError(f"scale_codes must have shape {(batch, 2, channels, num_patches)}, got {tuple(scale_codes.shape)}")
        if scale_codes.is_floating_point() or scale_codes.min() < 0 or scale_codes.max() >= self.config.num_scale_tokens:
            raise ValueError(f"scale_codes must be integers in [0, {self.config.num_scale_tokens})")
        return scale_codes

    def _token_statistics(self, batch: int, channels: int, num_patches: int, log_amplitude_mean,
                          log_amplitude_std, scale_codes) -> tuple[torch.Tensor, torch.Tensor]:
        """Side information given to `decode` -> per-token log-amplitude (mean, std), each [B, C * A]."""
        n = channels * num_patches
        if scale_codes is not None:
            if not self.uses_scale_tokens:
                raise ValueError("scale_codes given, but this model uses window_statistics: pass "
                                 "log_amplitude_mean and log_amplitude_std")
            scale_codes = self._check_scale_codes(scale_codes, batch, channels, num_patches)
            mean, std = self.dequantize_scales(scale_codes.reshape(batch, 2, n))
            return mean, std
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

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, channel_names, log_amplitude_mean: torch.Tensor | None = None,
               log_amplitude_std: torch.Tensor | None = None, scale_codes: torch.LongTensor | None = None,
               patch_mask: torch.Tensor | None = None, normalize_phase: bool = False,
               noise_filling: bool | torch.Tensor = False,
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
            noise_filling: mdct design with fitted `config.noise_filling_levels`: add random detail of the energy the
                codes did not keep (the bundled model's fast bands lose 12-42% of their power to coarse codes), so that band powers and
                the spectral slope are those of real EEG; for generation, at about twice the squared error of the
                default. A bool mask broadcastable to [B, C, A] fills only the patches where it is True (e.g. a
                continuation, not its real prompt). A tokenizer without fitted levels (and the released design)
                ignores it.
            generator: the random generator of the noise (reproducible decoding), else the global one.
            chunk_patches: mdct design: patches synthesised at a time (rounded up to whole refiner windows; default
                `DECODE_CHUNK_PATCHES`), which bounds the memory beyond the result for any length. Any chunk size
                decodes the same signal (up to float round-off, ~1e-6 relative) and the same noise. A positive int
                or None (checked for both designs; the released design decodes at once).

        Returns:
            EEG [B, C, A * patch_size] in microvolts.
        """
        self._check_codes(codes)
        batch, channels, num_patches = codes.shape[0], codes.shape[3], codes.shape[4]
        self._decode_chunk(chunk_patches, channels)  # an invalid chunk size is an error with either design
        if self.is_mdct:
            if scale_codes is None:
                raise ValueError("decode needs scale_codes (from encode): they carry the amplitude of every patch")
            channel_indices = self.channel_indices(channel_names, batch, channels)
            scale_codes = self._check_scale_codes(scale_codes, batch, channels, num_patches)
            token_mask = None if patch_mask is None else patch_mask.to(self.device).bool().reshape(batch, -1)
            return self._synthesize(codes, scale_codes, channel_indices, token_mask, noise_filling, generator,
                                    chunk_patches)
        mean, std = self._token_statistics(batch, channels, num_patches, log_amplitude_mean, log_amplitude_std,
                                           scale_codes)
        spectrum = self._decode_spectrum(codes, channel_names, patch_mask)  # codes checked above
        flat = [rearrange(t, "b c a p -> b (c a) p").float() for t in spectrum.values()]
        signal = spectrum_to_signal(*flat, mean, std, normalize_phase=normalize_phase)
        return rearrange(signal, "b (c a) p -> b c (a p)", c=channels)

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
        config = self.config
        batch, channels, samples = input_values.shape
        num_patches = samples // config.patch_size
        token_mask = None if patch_mask is None else patch_mask.reshape(batch, -1)
        input_values = input_values.to(self.device)
        if self.is_mdct:
            return self._forward_mdct(input_values.float(), channel_indices, token_mask)

        patches = rearrange(input_values, "b c (a p) -> b (c a) p", p=config.patch_size).float()
        target_amplitude, target_sin, target_cos, mean, std, scale_codes = self._spectrum_statistics(patches, token_mask)
        latents = self.encoder(input_values, channel_indices, token_mask)
        quantized, codes, quantizer_loss, usage, perplexity = self._quantize(latents, token_mask, None)
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

    def _forward_mdct(self, input_values: torch.Tensor, channel_indices: torch.Tensor, token_mask) -> NeuroRVQOutput:
        """Encode and decode with the mdct design. Codebooks are fixed (fitted by k-means, `codebook_fitting`); the
        loss is the z-scored time-domain MSE, which trains the refiner when there is one."""
        config = self.config
        batch, channels, _ = input_values.shape
        shapes, scale_codes = self.mdct_shapes(self.transform(input_values))
        codes = self._band_codes(shapes)
        signal = self._synthesize(codes, scale_codes, channel_indices, token_mask)
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
