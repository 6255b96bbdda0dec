"""NeuroRVQ large brainwave model (LBM): a decoder-only transformer that models tokenizer codes.

A recording tokenised by `NeuroRVQTokenizer` is a grid of positions (patch a, channel c), each carrying M
stream codes (two amplitude scale tokens, then S scales x K residual stages; see `layout.py`). Positions
run time-major (every channel of a patch, then the next patch), so sampling in order moves forward in time.
Two layouts model the same distribution p(position p | positions < p):

- `flattened`: one main-transformer step per (position, stream) token. Step t reads token t-1 (a learned
  BOS at t = 0) and predicts token t; its input also carries the stream, channel and time embeddings of
  the token being predicted, so the model always knows which stream of which channel comes next. Logits
  are restricted to that stream's slice of the offset vocabulary.
- `depthwise` (RQ-Transformer / CSM): one main step per position. Step p reads the summed stream
  embeddings of position p-1 (BOS at p = 0) plus the channel and time embeddings of position p; its hidden
  state conditions a small depth transformer that predicts the M codes of position p in stream order. With
  `depth_neighbours` (default), the depth step of stream m also reads stream m's codes at the previous channel and
  one second earlier: the main transformer sees earlier positions only as sums of 18 embeddings, from which a
  stream's own neighbours are slow to disentangle (training sat at the unigram for hundreds of steps without them).

Both share one API: `forward(positions [B, P, M], channel_ids [B, P], time_ids [B, P])` scores positions
(teacher forcing) and `generate` samples codes [B, S, K, C, A] that the tokenizer decodes to microvolts.
Output heads share their embedding table (weight tying, as in GPT-2 / nanoGPT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from neurorvq.tokenizer.loading import load_pretrained, register_bundled

from .configuration_lbm import LBMConfig
from .layout import channel_and_time_ids, codes_to_positions, positions_to_codes
from .sampling import check_number, check_sampling_controls, check_stream_temperatures

SPATIAL_KEY_SIZE = 16  # per head, channel-to-channel attention of `spatial_context`

# ----------------------------------------------------------------------------------------------------
# Outputs and cache
# ----------------------------------------------------------------------------------------------------


@dataclass
class LBMCache:
    """KV cache of the main transformer (the depth transformer is never cached: it is re-run per position).

    Args:
        key_values: per layer, (keys, values) each [B, heads, steps, head_dim].
        next_input (`torch.LongTensor` [B, n] or None): offset-vocabulary tokens whose summed embeddings are
            the input of the next main step (the last token for `flattened`, n = 1; the last position's M
            codes for `depthwise`); None = the next step reads BOS (empty context).
    """

    key_values: list[tuple[torch.Tensor, torch.Tensor]]
    next_input: torch.LongTensor | None = None
    positions: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # depth-wise: (tokens [B, L, M],
    # channel_ids [B, L], time_ids [B, L]) of the cached positions, the neighbours of the positions to come

    @property
    def length(self) -> int:
        """Main-transformer steps held."""
        return self.key_values[0][0].shape[2] if self.key_values else 0


@dataclass
class LBMGenerationState:
    """What [`LBMForCausalLM.generate`] carries from one position to the next. B' = the generation batch (B, or 2B
    with guidance: conditional rows, then unconditional ones).

    Args:
        tokens (`torch.LongTensor` [B', P, M]): offset tokens of the whole output, P = (A' + num_patches) * C: the
            prompt, then each position as it is sampled.
        channel_ids, patch_ids (`torch.LongTensor` [B', P]): channel-vocabulary index, and patch index from the start
            of the output, of each position.
        num_channels: C, positions per patch. window: W, the whole patches the context holds.
        condition_ids (`torch.LongTensor` [B'] or None): condition of each row (None = unconditional).
        use_cache: keep the main transformer's keys/values between positions (`cache`).
        sampler ([`CodeSampler`]): draws each stream's code. heads: `_stream_heads` of the layout's output table.
        first_position: the first position to sample (the prompt's length).
        start_patch, time_ids ([B', P]), cache: the context window: its first patch, the patch ids re-based to it,
            the cache of its positions sampled so far (None = to be rebuilt).
    """

    tokens: torch.LongTensor
    channel_ids: torch.LongTensor
    patch_ids: torch.LongTensor
    num_channels: int
    window: int
    condition_ids: torch.LongTensor | None
    use_cache: bool
    sampler: CodeSampler
    heads: list[tuple]
    first_position: int = 0
    start_patch: int = 0
    time_ids: torch.LongTensor | None = None
    cache: LBMCache | None = None

    @property
    def window_start(self) -> int:
        """The context window's first position."""
        return self.start_patch * self.num_channels


@dataclass
class LBMOutput(ModelOutput):
    """Output of [`LBMForCausalLM.forward`].

    Args:
        loss (`torch.FloatTensor` []): mean cross-entropy (nats) over all predicted codes (only with `labels`).
        logits (`torch.FloatTensor` [B, P, M, V_max]): for both layouts, logits[b, p, m] scores the code of
            stream m at position p given everything before it (earlier positions and, within position p,
            streams < m). V_max = the largest stream vocabulary; entries at or past stream m's own
            vocabulary size are -inf, so softmax/cross-entropy never leave the stream.
        cache ([`LBMCache`]): the main transformer's cache after these positions (`use_cache=True`). Transformers
            >= 5 names this field `cache`; `output.past_key_values` still reads it (transformers' alias).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: LBMCache | None = None


# ----------------------------------------------------------------------------------------------------
# Sampling helpers
# ----------------------------------------------------------------------------------------------------


def top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Keep the `top_k` largest logits of the last axis, set the rest to -inf."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely codes whose probability reaches `top_p`."""
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= top_p  # mass before this code already reaches top_p (keeps the first)
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None) -> torch.LongTensor:
    """Draw one code per row of `logits` [B, V] -> [B]. temperature 0 = greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits.float() / temperature, top_k), top_p)
    probs = logits.softmax(dim=-1)
    if generator is not None:  # multinomial needs the generator's device
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


@dataclass
class CodeSampler:
    """Draws one stream's code for every row of a generation batch ([`LBMForCausalLM.generate`]), reading
    `generator` in the order it is called.

    Args:
        stream_temperatures: M temperatures, one per stream (0 = greedy).
        top_k, top_p: `sample_logits`' filters (None = off).
        generator: a `torch.Generator` for reproducible samples (None = the global RNG).
        guidance_scale: classifier-free guidance's scale, or None (no guidance). With guidance the batch is the
            conditional rows then the unconditional ones: their logits are mixed, and both halves get the drawn codes.
    """

    stream_temperatures: list[float]
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None
    guidance_scale: float | None = None

    def __call__(self, logits: torch.Tensor, stream: int) -> torch.LongTensor:
        """Logits [B', V_stream] of stream `stream` -> its codes [B'] (in the stream's own vocabulary, no offset)."""
        guided = self.guidance_scale is not None
        if guided:
            conditional, unconditional = logits.chunk(2)
            logits = unconditional + self.guidance_scale * (conditional - unconditional)
        code = sample_logits(logits, self.stream_temperatures[stream], self.top_k, self.top_p, self.generator)
        return code.repeat(2) if guided else code


# ----------------------------------------------------------------------------------------------------
# Code embeddings from the tokenizer's codebooks
# ----------------------------------------------------------------------------------------------------


def stream_codebooks(tokenizer, layout) -> list[torch.Tensor]:
    """The tokenizer's codebook of every residual stream (s, k), scale-major: S * K float tensors [V, D] on the CPU."""
    codebooks = []
    for s in range(layout.num_scales):
        for k in range(layout.num_quantizers):
            codebook = tokenizer.quantizers[s].stages[k].codebook.detach().float().cpu()
            if codebook.shape[0] != layout.codebook_size:
                raise ValueError(f"the tokenizer's codebooks have {codebook.shape[0]} codes, this LBM expects "
                                 f"{layout.codebook_size}")
            codebooks.append(codebook)
    return codebooks


def code_embedding_features(layout, codebooks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per stream (layout order), a feature vector per code whose random projection starts its embedding: residual
    codes: their codeword (centred); scale streams: smooth (cosine) functions of the level, since level i and i + 1 are
    neighbouring amplitudes. -> M tensors [V_m, F_m]."""
    features = []
    if layout.has_scale_codes:
        level = torch.linspace(0, 1, layout.num_scale_tokens)[:, None]
        ordinal = torch.cos(math.pi * level * torch.arange(1, 17)[None]) / torch.arange(1, 17) ** 0.5
        features += [ordinal, ordinal]
    return features + [codebook - codebook.mean(0) for codebook in codebooks]


def projected_features(features: list[torch.Tensor], width: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """Each stream's features through its own fixed random projection to `width`, scaled to `std`; stacked in the
    offset vocabulary's order -> [V_total, width]."""
    rows = []
    for values in features:
        projection = torch.randn(values.shape[1], width, generator=generator)
        embedded = values @ projection
        rows.append(embedded / embedded.std().clamp(min=1e-12) * std)
    return torch.cat(rows)


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


class LBMAttention(nn.Module):
    """Causal multi-head self-attention (no biases) that can extend a (keys, values) cache."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                attn_mask: torch.Tensor | bool | None = None):
        """x [B, T, D], past (k, v) [B, H, L, Dh] -> (y [B, T, D], (k, v) [B, H, L + T, Dh]).

        Default (`attn_mask` None): causal, query i (absolute step L + i) attends keys 0..L + i. `attn_mask`: a bool
        mask [T, L + T] or [B, 1, T, L + T] (True = attend) replacing it, or `False` for full (bidirectional)
        attention.
        """
        # plain views, not einops: generation calls this 40 times per position, where parsing a pattern shows
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)  # 3 x [B, H, T, Dh]
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        steps, total = x.shape[1], k.shape[2]
        mask, causal = None, False
        if attn_mask is not None:
            mask = None if attn_mask is False else attn_mask
        elif total == steps:
            causal = steps > 1
        elif steps > 1:  # new queries after a cache: causal block shifted right by the cache length
            mask = torch.ones(steps, total, dtype=torch.bool, device=x.device).tril(diagonal=total - steps)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).flatten(2)), (k, v)


class LBMMLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, int(dim * mlp_ratio), bias=False)
        self.fc2 = nn.Linear(int(dim * mlp_ratio), dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LBMBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps, bias=False)
        self.attn = LBMAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps, bias=False)
        self.mlp = LBMMLP(dim, mlp_ratio)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, past=None, attn_mask=None):
        # norms and dropout as functions, not module calls: generation runs blocks 41 times per position on one
        # token, where each call's overhead is a sizeable share of the work (the Linears stay modules: adapters
        # such as LoRA wrap them)
        norm1, norm2, p = self.norm1, self.norm2, self.drop.p
        y, kv = self.attn(F.layer_norm(x, norm1.normalized_shape, norm1.weight, None, norm1.eps), past, attn_mask)
        x = x + F.dropout(y, p, self.training)
        y = F.layer_norm(x, norm2.normalized_shape, norm2.weight, None, norm2.eps)
        return x + F.dropout(self.mlp(y), p, self.training), kv


class LBMTransformer(nn.Module):
    """A causal stack of blocks with a final LayerNorm (used for both the main and the depth transformer)."""

    def __init__(self, dim: int, num_layers: int, num_heads: int, mlp_ratio: float, dropout: float, eps: float):
        super().__init__()
        self.layers = nn.ModuleList(LBMBlock(dim, num_heads, mlp_ratio, dropout, eps) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim, eps=eps, bias=False)
        for layer in self.layers:  # GPT-2: residual projections at std / sqrt(2 * layers) keep the stream's variance flat
            layer.attn.proj.init_scale = layer.mlp.fc2.init_scale = 1 / math.sqrt(2 * num_layers)

    def forward(self, x: torch.Tensor, past: list | None = None, attn_mask=None):
        """x [B, T, D], past: per-layer (k, v) or None -> (normed hidden [B, T, D], per-layer (k, v)).
        `attn_mask`: see `LBMAttention.forward` (None = causal)."""
        key_values = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, past[i] if past else None, attn_mask)
            key_values.append(kv)
        return F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, None, self.norm.eps), key_values


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def init_block_weights(module: nn.Module, std: float) -> bool:
    """The LBMs' shared `_init_weights` part: Linear / Embedding weights ~ N(0, std x `init_scale`), LayerNorm
    weights 1. Returns whether `module` was one of those. (transformers only calls `_init_weights` on modules that own
    parameters, so the residual scaling of `LBMTransformer` is carried by an `init_scale` attribute on the Linear.)"""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        init.normal_(module.weight, std=std * getattr(module, "init_scale", 1.0))
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
    else:
        return False
    return True


class LBMPreTrainedModel(PreTrainedModel):
    config_class = LBMConfig
    base_model_prefix = "lbm"
    main_input_name = "positions"
    supports_gradient_checkpointing = False
    _no_split_modules = ["LBMBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if init_block_weights(module, std):
            return
        if isinstance(module, LBMForCausalLM):
            init.normal_(module.bos, std=std)
            if module.depth_position is not None:
                init.normal_(module.depth_position, std=std)
            if module.depth_embed is not None:
                # the depth step adds code embeddings to the projected main hidden state (~0.25 per element): at
                # std 0.02 they are invisible next to it and training sits at the unigram; at d^-1/2 they are not
                init.normal_(module.depth_embed.weight, std=module.depth_embed.weight.shape[1] ** -0.5)
            for linear in (module.previous_channel_in, module.previous_second_in):
                if linear is not None:
                    init.eye_(linear.weight)  # neighbour codes enter at the scale of the code embeddings
            if module.codeword_mean is not None:
                # predicted mean 0 and a broad precision: at step 0 the codeword score is a weak prior towards small
                # codewords, and the logits are those of the plain head
                init.zeros_(module.codeword_mean.weight)
                init.zeros_(module.codeword_precision)
                init.zeros_(module.codeword_log_precision)
            if module.spatial_in is not None:
                init.zeros_(module.spatial_in)  # the spatial context starts switched off


class LBMInputsMixin:
    """Code tables, input checks and generation inputs shared by the LBMs (`LBMForCausalLM`,
    `LBMForSpatialGeneration`). The model calls `_init_code_tables` (and `_init_codeword_tables`) in its `__init__` and
    provides `config` (an `LBMConfig`), `condition_embed` (or None) and `device`.
    """

    # ---- input checks -------------------------------------------------------------------------------

    def _check_positions(self, positions, name: str = "positions") -> None:
        if not isinstance(positions, torch.Tensor) or positions.dim() != 3:
            shape = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
            raise ValueError(f"{name} must be a LongTensor [B, P, M], got {shape}")
        if positions.is_floating_point() or positions.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer codes, got {positions.dtype}")
        if positions.shape[0] == 0 or positions.shape[1] == 0:
            raise ValueError(f"{name} is empty: shape {tuple(positions.shape)}")
        if positions.shape[-1] != self.num_streams:
            raise ValueError(f"{name} have {positions.shape[-1]} streams, the model has {self.num_streams} "
                             f"({', '.join(self.code_layout.stream_names)})")
        sizes = torch.tensor(self._stream_sizes, device=positions.device)
        if (positions < 0).any() or (positions >= sizes).any():
            bad = ((positions < 0) | (positions >= sizes)).nonzero()[0].tolist()
            raise ValueError(f"{name} hold a code outside its stream's vocabulary (first at [b, p, m] = {bad}; "
                             f"stream sizes {self._stream_sizes})")

    def _check_condition_ids(self, condition_ids, batch: int) -> torch.Tensor | None:
        """None or [B] integer ids in [0, num_conditions] -> a LongTensor on the model's device (or None)."""
        if condition_ids is None:
            return None
        if not isinstance(condition_ids, torch.Tensor) or condition_ids.is_floating_point() \
                or tuple(condition_ids.shape) != (batch,):
            raise ValueError(f"condition_ids must be an integer tensor of shape ({batch},), got {condition_ids!r}")
        if (condition_ids < 0).any() or (condition_ids > self.config.num_conditions).any():
            raise ValueError(f"condition_ids must lie in [0, {self.config.num_conditions}] (0 = unconditional; "
                             f"conditions: {self.config.condition_names or []})")
        if self.condition_embed is None and bool((condition_ids > 0).any()):
            raise ValueError("this model was trained without conditions")
        return condition_ids.long().to(self.device)

    def _check_ids(self, ids, name: str, shape: tuple[int, int], upper: int) -> None:
        if not isinstance(ids, torch.Tensor) or tuple(ids.shape) != shape:
            got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"{name} must be a LongTensor of shape {shape} ([B, P]), got {got}")
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"{name} must be integers, got {ids.dtype}")
        if (ids < 0).any() or (ids >= upper).any():
            raise ValueError(f"{name} must lie in [0, {upper}), got [{int(ids.min())}, {int(ids.max())}]")


    # ---- tables shared by the LBMs ----------------------------------------------------------------------

    def _init_code_tables(self, config) -> None:
        """The code alphabet's python-side tables: built per call, so no buffer has to survive meta-device loading."""
        layout = config.code_layout
        self.code_layout, self.num_streams = layout, layout.num_streams
        self._stream_sizes = layout.stream_vocab_sizes
        self._offsets = [sum(self._stream_sizes[:m]) for m in range(self.num_streams)]
        self._channel_index = {name: i for i, name in enumerate(config.channel_vocabulary)}

    def _init_codeword_tables(self, config, width: int) -> None:
        """Codeword scores (`codeword_logits`): each stream's codewords side by side in one [V_max, sum of dims]
        buffer (scale levels on [-1, 1]; `_copy_codewords` writes the codebooks), and the mean / precision maps from
        the head input of size `width`."""
        self.codeword_mean = self.codeword_precision = self.codeword_log_precision = None
        if not config.codeword_logits:
            return
        layout = self.code_layout
        dims = [1, 1] if layout.has_scale_codes else []
        dims += [d for d in config.codeword_dims for _ in range(layout.num_quantizers)]
        ends = [sum(dims[: m + 1]) for m in range(self.num_streams)]
        self._codeword_slices = [(end - d, end) for end, d in zip(ends, dims)]
        self.register_buffer("codewords", torch.zeros(max(self._stream_sizes), sum(dims)))
        if layout.has_scale_codes:
            self.codewords[: layout.num_scale_tokens, :2] = torch.linspace(-1, 1, layout.num_scale_tokens)[:, None]
        self.codeword_mean = nn.Linear(width, sum(dims), bias=False)
        self.codeword_precision = nn.Parameter(torch.zeros(self.num_streams, width))
        self.codeword_log_precision = nn.Parameter(torch.zeros(self.num_streams))

    def stream_offsets(self, device=None) -> torch.LongTensor:
        """[M] start of each stream in the offset vocabulary (see `layout.stream_offsets`)."""
        return torch.tensor(self._offsets, dtype=torch.long, device=device)

    # ---- generation inputs ---------------------------------------------------------------------------

    @staticmethod
    def _guided_batch(guidance_scale, index, condition_ids, prompt):
        """Classifier-free guidance's batch: with `guidance_scale` != 1 (which needs a condition for every sample),
        2B rows, the conditional ones then the unconditional ones (always holding the same codes).
        Returns (guided, index [B', C], condition_ids [B'] or None, prompt [B', P, M] or None)."""
        guidance_scale = check_number("guidance_scale", guidance_scale, note="1 = no guidance")
        if guidance_scale == 1.0:
            return False, index, condition_ids, prompt
        if condition_ids is None or not bool((condition_ids > 0).all()):
            raise ValueError("guidance_scale != 1 needs a condition for every sample (it contrasts conditional and "
                             "unconditional predictions)")
        index, condition_ids = index.repeat(2, 1), torch.cat((condition_ids, torch.zeros_like(condition_ids)))
        return True, index, condition_ids, None if prompt is None else prompt.repeat(2, 1, 1)

    @torch.no_grad()
    def _copy_codewords(self, codebooks: list[torch.Tensor]) -> None:
        """The tokenizer's codebooks (`stream_codebooks`) into `codewords`, and each stream's prior precision such
        that the term -precision ||w_j||^2 / 2 spreads by 1 nat at the start (a weak start)."""
        first = 2 if self.code_layout.has_scale_codes else 0
        for m, codebook in enumerate(codebooks, start=first):
            start, end = self._codeword_slices[m]
            if codebook.shape[1] != end - start:
                raise ValueError(f"stream {m} of the tokenizer has {codebook.shape[1]}-d codewords, this LBM "
                                 f"expects {end - start} (codeword_dims)")
            self.codewords[: codebook.shape[0], start:end] = codebook.to(self.codewords)
        for m, (start, end) in enumerate(self._codeword_slices):
            words = self.codewords[: self._stream_sizes[m], start:end]
            spread = (words * words).sum(-1).std() / 2
            self.codeword_log_precision[m] = -torch.log(spread.clamp(min=1e-8))

    def channel_indices(self, channels, batch_size: int | None = None) -> torch.LongTensor:
        """Channel ids [B, C] from names (one list, or one list per sample) or an index tensor ([C] or [B, C]).

        A single list / [C] row is repeated `batch_size` times (default 1)."""
        if isinstance(channels, torch.Tensor):
            if channels.dim() not in (1, 2) or channels.is_floating_point() or channels.dtype == torch.bool:
                raise ValueError(f"channel_indices must be an integer tensor [C] or [B, C], got "
                                 f"{channels.dtype} {tuple(channels.shape)}")
            rows = channels.long().reshape(-1, channels.shape[-1])
            if rows.numel() == 0:
                raise ValueError("channel_indices is empty")
            if (rows < 0).any() or (rows >= self.config.channel_vocab_size).any():
                raise ValueError(f"channel_indices must lie in [0, {self.config.channel_vocab_size})")
        else:
            if isinstance(channels, str) or not isinstance(channels, Sequence) or not len(channels):
                raise ValueError("channels must be a list of channel names, one list per sample, or an index tensor")
            lists = [channels] if isinstance(channels[0], str) else list(channels)
            table = []
            for names in lists:
                if isinstance(names, str) or not isinstance(names, Sequence) or not len(names):
                    raise ValueError(f"expected a non-empty list of channel names, got {names!r}")
                unknown = [n for n in names if not isinstance(n, str) or n.lower() not in self._channel_index]
                if unknown:
                    raise ValueError(f"unknown channel names {unknown}: not in the model's channel_vocabulary")
                table.append([self._channel_index[n.lower()] for n in names])
            if len({len(r) for r in table}) != 1:
                raise ValueError("every sample must list the same number of channels")
            rows = torch.tensor(table, dtype=torch.long)
        if any(len(set(r)) != len(r) for r in rows.tolist()):
            raise ValueError("channels contain duplicates")
        if batch_size is not None and rows.shape[0] != batch_size:
            if rows.shape[0] != 1:
                raise ValueError(f"channels give {rows.shape[0]} rows for a batch of {batch_size}")
            rows = rows.expand(batch_size, -1)
        return rows.to(self.device)

    def _generation_conditions(self, condition, batch: int) -> torch.LongTensor | None:
        """`condition` (None, a name, or one name per sample) -> condition ids [B] (None = unconditional)."""
        if condition is None:
            return None
        names = [condition] * batch if isinstance(condition, str) else condition
        if isinstance(names, str) or not isinstance(names, Sequence) or len(names) != batch:
            raise ValueError(f"condition must be a name or a list of {batch} names (one per sample), got {condition!r}")
        return torch.tensor([self.config.condition_id(name) for name in names], dtype=torch.long, device=self.device)

    def _check_prompt(self, prompt_codes, prompt_scale_codes, batch: int | None, num_channels: int):
        """Validate the prompt; return positions [B, A'*C, M] (B taken from the prompt)."""
        layout = self.code_layout
        if prompt_codes is None:
            if prompt_scale_codes is not None:
                raise ValueError("prompt_scale_codes given without prompt_codes")
            return None
        if not isinstance(prompt_codes, torch.Tensor) or prompt_codes.dim() != 5:
            shape = tuple(prompt_codes.shape) if isinstance(prompt_codes, torch.Tensor) else type(prompt_codes).__name__
            raise ValueError(f"prompt_codes must be a LongTensor [B, S, K, C, A'], got {shape}")
        b, s, k, c, a = prompt_codes.shape
        if (s, k) != (layout.num_scales, layout.num_quantizers):
            raise ValueError(f"prompt_codes have S={s}, K={k}; the model has S={layout.num_scales}, "
                             f"K={layout.num_quantizers}")
        if c != num_channels or a == 0 or (batch is not None and b != batch):
            raise ValueError(f"prompt_codes shape {tuple(prompt_codes.shape)} does not match {num_channels} channels "
                             f"(batch {batch}) or holds no patch")
        if layout.has_scale_codes and prompt_scale_codes is None:
            raise ValueError("this model generates scale codes: pass prompt_scale_codes [B, 2, C, A'] with the prompt")
        if not layout.has_scale_codes and prompt_scale_codes is not None:
            raise ValueError("this model has no scale streams (num_scale_tokens=0): prompt_scale_codes must be None")
        positions = codes_to_positions(prompt_codes, prompt_scale_codes).to(self.device)
        self._check_positions(positions, "prompt codes")
        return positions



# LBMs shipped inside the package, loadable offline by name.
PRETRAINED = Path(__file__).resolve().parent / "pretrained"
BUNDLED_MODELS = {"neurorvq/lbm-small": PRETRAINED / "lbm-small",  # the spatial LBM (`LBMForSpatialGeneration`)
                  "neurorvq/lbm-small-depthwise": PRETRAINED / "lbm-small-depthwise"}  # the previous depth-wise bundle
for _name, _folder in BUNDLED_MODELS.items():
    register_bundled(_name, _folder)


class LBMForCausalLM(LBMInputsMixin, LBMPreTrainedModel):
    """Decoder-only LBM over NeuroRVQ codes, `flattened` or `depthwise` (see the module docstring).

    Example:

    ```python
    >>> config = LBMConfig.from_tokenizer_config(tokenizer.config, layout="depthwise")
    >>> model = LBMForCausalLM(config)
    >>> positions = codes_to_positions(encoded.codes, encoded.scale_codes)          # [B, A*C, M]
    >>> channel_ids, time_ids = channel_and_time_ids(channel_indices, num_patches)  # [B, A*C] each
    >>> model(positions, channel_ids, time_ids, labels=True).loss.backward()
    >>> out = model.generate(["fp1", "cz", "o1"], num_patches=10, batch_size=2)
    >>> eeg = tokenizer.decode(out["codes"], ["fp1", "cz", "o1"], scale_codes=out["scale_codes"])
    ```
    """

    def __init__(self, config: LBMConfig):
        super().__init__(config)
        self._init_code_tables(config)
        layout = self.code_layout
        self.flattened = config.layout == "flattened"
        dim = config.hidden_size

        self.token_embed = nn.Embedding(layout.vocab_size, dim)  # offset vocabulary; also the flattened head
        self.channel_embed = nn.Embedding(config.channel_vocab_size, dim)
        self.time_embed = nn.Embedding(config.max_patches, dim)
        self.bos = nn.Parameter(torch.zeros(dim))
        self.stream_embed = nn.Embedding(self.num_streams, dim) if self.flattened else None
        self.drop = nn.Dropout(config.dropout)
        self.transformer = LBMTransformer(dim, config.num_layers, config.num_heads, config.mlp_ratio,
                                          config.dropout, config.layer_norm_eps)
        if self.flattened:
            self.depth_in = self.depth_embed = self.depth_position = self.depth_transformer = None
            self.previous_channel_in = self.previous_second_in = None
        else:
            depth = config.depth_hidden_size
            self.depth_in = nn.Linear(dim, depth, bias=False)
            self.depth_embed = nn.Embedding(layout.vocab_size, depth)  # offset vocabulary; also the depth head
            self.depth_position = nn.Parameter(torch.zeros(self.num_streams, depth))
            self.depth_transformer = LBMTransformer(depth, config.depth_layers, config.depth_heads,
                                                    config.mlp_ratio, config.dropout, config.layer_norm_eps)
            use = config.depth_neighbours
            self.previous_channel_in = nn.Linear(depth, depth, bias=False) if use else None
            self.previous_second_in = nn.Linear(depth, depth, bias=False) if use else None
        self._init_codeword_tables(config, config.depth_hidden_size)
        self.spatial_query = self.spatial_key = self.spatial_in = None
        if config.spatial_context:
            heads = config.spatial_heads
            self.spatial_query = nn.Embedding(config.channel_vocab_size, heads * SPATIAL_KEY_SIZE)
            self.spatial_key = nn.Embedding(config.channel_vocab_size, heads * SPATIAL_KEY_SIZE)
            self.spatial_in = nn.Parameter(torch.zeros(heads, self.codewords.shape[1], config.depth_hidden_size))
        self.condition_embed = (nn.Embedding(config.num_conditions + 1, dim) if config.num_conditions else None)
        self.post_init()

    # ---- tables -------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_code_embeddings(self, tokenizer, seed: int = 0) -> None:
        """Start the code embeddings (and so the tied output heads) with the codes' geometry
        (`code_embedding_features`): similar codes get similar embeddings and similar logits from step 0, instead of
        512 unrelated symbols to be told apart from data. Every table keeps the std of its default initialisation
        (see `_init_weights`); training moves them freely afterwards. With codeword scores, the tokenizer's codebooks
        are copied into `codewords`.
        """
        generator = torch.Generator().manual_seed(seed)
        codebooks = stream_codebooks(tokenizer, self.code_layout)
        features = code_embedding_features(self.code_layout, codebooks)
        if self.codeword_mean is not None:
            self._copy_codewords(codebooks)
        for table in (self.token_embed, self.depth_embed):
            if table is None:
                continue
            # the scales of `_init_weights`: std initializer_range (main), d^-1/2 (depth)
            std = self.config.initializer_range if table is self.token_embed else table.weight.shape[1] ** -0.5
            table.weight.copy_(projected_features(features, table.weight.shape[1], std, generator).to(table.weight))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus the bundled names (e.g. `"neurorvq/lbm-small"`, offline)."""
        return load_pretrained(super().from_pretrained, pretrained_model_name_or_path, cls.config_class.model_type,
                               *args, **kwargs)

    def _stream_logits(self, hidden: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """hidden [B, P, M, d] x tied table [V_total, d] -> logits [B, P, M, V_max], -inf past each stream's size."""
        sizes = torch.tensor(self._stream_sizes, device=hidden.device)
        codes = torch.arange(max(self._stream_sizes), device=hidden.device)
        index = self.stream_offsets(hidden.device)[:, None] + torch.minimum(codes, sizes[:, None] - 1)
        logits = torch.einsum("bpmd,mvd->bpmv", hidden, table[index])
        if self.codeword_mean is not None:  # depth-wise only: `table` is the depth head
            width = logits.shape[-1]
            logits = logits + torch.stack([F.pad(self._codeword_scores(hidden[:, :, m], m),
                                                 (0, width - self._stream_sizes[m])) for m in range(hidden.shape[2])], 2)
        return logits.masked_fill(codes >= sizes[:, None], float("-inf"))

    def _stream_heads(self, table: torch.Tensor) -> list[tuple]:
        """Per stream, the constants of its logits (`_one_stream_logits`): its rows of the tied `table`, transposed
        ([d, V_stream]), and with codeword scores those of `_codeword_head`. Generation makes them once per call."""
        heads = []
        for stream, (start, size) in enumerate(zip(self._offsets, self._stream_sizes)):
            codeword = self._codeword_head(stream) if self.codeword_mean is not None else None
            heads.append((table[start:start + size].T, codeword))
        return heads

    def _one_stream_logits(self, hidden: torch.Tensor, head: tuple, stream: int) -> torch.Tensor:
        """hidden [B, d] and stream `stream`'s head (`_stream_heads`) -> logits [B, V_stream] over its own codes."""
        table_t, codeword = head
        logits = hidden @ table_t
        if codeword is not None:
            logits = logits + self._codeword_scores(hidden, stream, codeword)
        return logits

    def _codeword_head(self, stream: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stream `stream`'s constants of `_codeword_scores`: its mean map ([d, D]), codewords ([D, V]) and
        ||w_j||^2 / 2 ([V])."""
        start, end = self._codeword_slices[stream]
        words = self.codewords[: self._stream_sizes[stream], start:end]  # [V, D]
        return self.codeword_mean.weight[start:end].T, words.T, 0.5 * (words * words).sum(-1)

    def _codeword_scores(self, hidden: torch.Tensor, stream: int, head: tuple | None = None) -> torch.Tensor:
        """Depth hidden [..., d] of stream `stream` -> Gaussian scores [..., V_stream]: precision * (mean . w_j -
        ||w_j||^2 / 2) = -precision / 2 * ||w_j - mean||^2 + a constant, over the stream's codewords w_j.
        `head`: its `_codeword_head` (made here when None)."""
        mean_map, words_t, half_norms = self._codeword_head(stream) if head is None else head
        mean = hidden @ mean_map  # [..., D]
        log_precision = hidden @ self.codeword_precision[stream] + self.codeword_log_precision[stream]
        precision = log_precision.clamp(-12.0, 12.0).exp()[..., None]
        return precision * (mean @ words_t - half_norms)

    # ---- the two transformers -------------------------------------------------------------------------

    def _main(self, previous: torch.LongTensor, pending: torch.LongTensor | None, channel_ids: torch.Tensor,
              time_ids: torch.Tensor, stream_ids: torch.Tensor | None, past: list | None,
              condition_ids: torch.Tensor | None = None):
        """Run main-transformer steps.

        Step t's input is the summed embedding of its n input tokens: `pending` [B, n] for the first step
        (BOS when None), then `previous` [B, T-1, n]; plus the channel/time (and, flattened, stream)
        embeddings [B, T] of what step t predicts, and the condition embedding of `condition_ids` [B] (None =
        unconditional) on every step. Returns (hidden [B, T, D], per-layer (k, v)).
        """
        batch = channel_ids.shape[0]
        first = (self.bos.expand(batch, 1, -1) if pending is None
                 else self.token_embed(pending).sum(dim=1, keepdim=True))
        x = torch.cat((first, self.token_embed(previous).sum(dim=2)), dim=1)
        x = x + self.channel_embed(channel_ids) + self.time_embed(time_ids)
        if stream_ids is not None:
            x = x + self.stream_embed(stream_ids)
        if self.condition_embed is not None:
            if condition_ids is None:
                condition_ids = torch.zeros(batch, dtype=torch.long, device=x.device)
            x = x + self.condition_embed(condition_ids)[:, None]
        return self.transformer(self.drop(x), past)

    def _depth(self, hidden: torch.Tensor, known: torch.LongTensor, neighbour_inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Depth transformer: main hidden [B, P, D] and the first j codes of each position (offset tokens
        [B, P, j]) -> depth hidden [B, P, j + 1, d]; output i predicts stream i.

        Input 0 = projected main hidden; input i = projected main hidden + embedding of stream i-1's code
        (+ a learned per-stream position embedding). With `depth_neighbours`, input i also carries
        `neighbour_inputs[:, :, i]` ([B, P, M, d], `_neighbour_inputs`): stream i's codes at the previous channel
        and the previous second.
        """
        batch, num_positions, _ = hidden.shape
        h = self.depth_in(hidden)[:, :, None]
        codes = torch.cat((torch.zeros_like(h), self.depth_embed(known)), dim=2)
        x = h + codes + self._depth_offsets(neighbour_inputs)[..., : known.shape[-1] + 1, :]
        out, _ = self.depth_transformer(self.drop(x.flatten(0, 1)))
        return out.reshape(batch, num_positions, -1, out.shape[-1])

    def _depth_offsets(self, neighbour_inputs: torch.Tensor | None) -> torch.Tensor:
        """What depth input i adds to the projected main hidden state and stream i-1's code embedding: stream i's
        position embedding, plus its neighbour inputs ([..., M, d]) when given -> [..., M, d]."""
        return self.depth_position if neighbour_inputs is None else self.depth_position + neighbour_inputs

    def _codeword_vectors(self, tokens: torch.LongTensor) -> torch.Tensor:
        """Offset tokens [B, L, M] -> each stream's codeword, side by side: [B, L, sum of codeword dims] (positions not
        sampled yet hold 0s: clamped to a valid row, and never weighted)."""
        return torch.cat([self.codewords[(tokens[..., m] - self._offsets[m]).clamp(min=0), start:end]
                          for m, (start, end) in enumerate(self._codeword_slices)], dim=-1)

    def _spatial_inputs(self, tokens: torch.LongTensor, channel_ids: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        """`spatial_context` depth inputs [B, L, M, d] of every position of tokens [B, L, M]: per head, a softmax over the
        earlier positions of the same second (same time id), weighted by their channel pair only, of their codewords,
        each stream's part through its own map. Zero for the first channel of a second."""
        heads = self.config.spatial_heads
        query = rearrange(self.spatial_query(channel_ids), "b l (h k) -> b h l k", h=heads)
        key = rearrange(self.spatial_key(channel_ids), "b l (h k) -> b h l k", h=heads)
        length = tokens.shape[1]
        earlier = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril(-1)
        visible = (time_ids[:, :, None] == time_ids[:, None, :]) & earlier  # [B, L, L]
        scores = (query @ key.transpose(-1, -2)) / math.sqrt(SPATIAL_KEY_SIZE)
        weights = scores.masked_fill(~visible[:, None], float("-inf")).softmax(-1)
        weights = torch.where(visible[:, None].any(-1, keepdim=True), weights, 0.0)  # no earlier channel: nothing
        context = weights @ self._codeword_vectors(tokens)[:, None]  # [B, H, L, sum D]
        return torch.stack([torch.einsum("bhlD,hDd->bld", context[..., start:end], self.spatial_in[:, start:end])
                            for start, end in self._codeword_slices], dim=2)

    def _neighbour_inputs(self, neighbours: torch.LongTensor) -> torch.Tensor:
        """Neighbour codes [B, P, M, 2] (offset tokens, -1 = none) -> depth inputs [B, P, M, d]: each through its
        own linear map of the code embedding (none -> 0)."""
        embedded = self.depth_embed(neighbours.clamp(min=0)) * (neighbours >= 0)[..., None]
        return self.previous_channel_in(embedded[..., 0, :]) + self.previous_second_in(embedded[..., 1, :])

    @staticmethod
    def neighbour_tokens(tokens: torch.LongTensor, channel_ids: torch.Tensor, time_ids: torch.Tensor) -> torch.LongTensor:
        """Each position's same-stream codes at the previous channel of its second (the position before it, when
        that has the same time id) and at its channel one second earlier (same channel id, time id - 1).

        tokens [B, P, M], channel_ids / time_ids [B, P] -> [B, P, M, 2] offset tokens, -1 where there is none.
        """
        none = torch.full_like(tokens, -1)
        same_second = torch.zeros_like(time_ids, dtype=torch.bool)
        same_second[:, 1:] = time_ids[:, 1:] == time_ids[:, :-1]
        previous_channel = torch.where(same_second[..., None], torch.roll(tokens, 1, dims=1), none)
        match = (channel_ids[:, :, None] == channel_ids[:, None, :]) & (time_ids[:, :, None] - 1 == time_ids[:, None, :])
        index = match.int().argmax(dim=-1)  # [B, P]: the matching earlier position (0 when none)
        found = torch.gather(tokens, 1, index[..., None].expand_as(tokens))
        previous_second = torch.where(match.any(dim=-1)[..., None], found, none)
        return torch.stack((previous_channel, previous_second), dim=-1)

    def _run_positions(self, tokens: torch.LongTensor, channel_ids: torch.Tensor, time_ids: torch.Tensor,
                       cache: LBMCache | None, condition_ids: torch.Tensor | None = None):
        """Main transformer over whole positions (offset tokens [B, P, M]) after `cache`.

        Returns (hidden: [B, P, M, D] flattened / [B, P, D] depthwise, the extended cache)."""
        pending = cache.next_input if cache is not None else None
        past = cache.key_values if cache is not None else None
        batch, num_positions, m = tokens.shape
        if self.flattened:
            flat = tokens.flatten(1)
            streams = torch.arange(m, device=tokens.device).repeat(num_positions)
            hidden, kv = self._main(flat[:, :-1, None], pending, channel_ids.repeat_interleave(m, dim=1),
                                    time_ids.repeat_interleave(m, dim=1), streams, past, condition_ids)
            return hidden.reshape(batch, num_positions, m, -1), LBMCache(kv, flat[:, -1:])
        hidden, kv = self._main(tokens[:, :-1], pending, channel_ids, time_ids, None, past, condition_ids)
        held = (tokens, channel_ids, time_ids)
        if cache is not None and cache.positions is not None:
            held = tuple(torch.cat(pair, dim=1) for pair in zip(cache.positions, held))
        return hidden, LBMCache(kv, tokens[:, -1], held)

    # ---- training / scoring forward -------------------------------------------------------------------

    def forward(self, positions: torch.LongTensor, channel_ids: torch.LongTensor, time_ids: torch.LongTensor,
                labels: bool | torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_mask: torch.Tensor | None = None, cache: LBMCache | None = None, use_cache: bool = False,
                past_key_values: LBMCache | None = None, return_dict: bool | None = None,
                condition_ids: torch.Tensor | None = None) -> LBMOutput:
        """Score positions (teacher forcing) and optionally extend a cache.

        Args:
            positions: [B, P, M] stream codes (`codes_to_positions`), each in its stream's vocabulary.
            channel_ids: [B, P] channel-vocabulary index of each position.
            time_ids: [B, P] patch index relative to the start of the context window (< `max_patches`).
            labels: `True` = score `positions` themselves; or a [B, P, M] LongTensor of targets (-100 = skip).
                None = no loss.
            attention_mask / position_mask: optional [B, P], 1 = real position. Padded positions are left
                out of the loss; pad on the right (causal attention never lets them affect real ones).
            cache: an [`LBMCache`] of earlier positions of the same windows (flattened: ending on a whole
                position); `positions` continue them. `past_key_values` is an alias (the pre-v5 name).
            use_cache: return the extended cache in `output.cache` (also readable as `output.past_key_values`).
            condition_ids: optional [B] condition of each window (`config.condition_id`; 0 or None = unconditional).

        Returns:
            [`LBMOutput`]: `loss`, `logits` [B, P, M, V_max] and `cache`.
        """
        if past_key_values is not None:
            if cache is not None:
                raise ValueError("pass the cache as `cache` or `past_key_values`, not both")
            cache = past_key_values
        self._check_positions(positions)
        batch, num_positions, m = positions.shape
        self._check_ids(channel_ids, "channel_ids", (batch, num_positions), self.config.channel_vocab_size)
        self._check_ids(time_ids, "time_ids", (batch, num_positions), self.config.max_patches)
        done = 0 if cache is None else cache.length
        if self.flattened and done % m:
            raise ValueError(f"past_key_values holds {done} tokens, not a whole number of positions of {m} streams")
        steps = num_positions * (m if self.flattened else 1)
        if done + steps > self.config.max_positions:
            raise ValueError(f"context too long: {done} cached + {steps} new steps > max_positions="
                             f"{self.config.max_positions}; use shorter windows (generate slides automatically)")

        condition_ids = self._check_condition_ids(condition_ids, batch)
        tokens = positions.long() + self.stream_offsets(positions.device)
        hidden, cache = self._run_positions(tokens, channel_ids.long(), time_ids.long(), cache, condition_ids)
        if self.flattened:
            logits = self._stream_logits(hidden, self.token_embed.weight)
        else:
            neighbour_inputs = None
            if self.previous_channel_in is not None:  # the extended cache holds the earlier positions and these
                neighbour_inputs = self._neighbour_inputs(self.neighbour_tokens(*cache.positions)[:, -num_positions:])
            if self.spatial_in is not None:
                spatial = self._spatial_inputs(*cache.positions)[:, -num_positions:]
                neighbour_inputs = spatial if neighbour_inputs is None else neighbour_inputs + spatial
            logits = self._stream_logits(self._depth(hidden, tokens[:, :, :-1], neighbour_inputs),
                                         self.depth_embed.weight)

        loss = None
        if labels is not None and labels is not False:
            targets = positions.long() if labels is True else labels.long()
            if tuple(targets.shape) != tuple(positions.shape):
                raise ValueError(f"labels must be True or a [B, P, M] tensor, got shape {tuple(targets.shape)}")
            mask = position_mask if position_mask is not None else attention_mask
            if mask is not None:
                if tuple(mask.shape) != (batch, num_positions):
                    raise ValueError(f"position_mask must have shape {(batch, num_positions)}, got {tuple(mask.shape)}")
                targets = targets.masked_fill(~mask.bool()[..., None], -100)
            loss = F.cross_entropy(logits.flatten(0, 2).float(), targets.flatten(), ignore_index=-100)
        return LBMOutput(loss=loss, logits=logits, cache=cache if use_cache else None)

    # ---- generation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, channel_indices=None, num_patches: int | None = None, prompt_codes: torch.Tensor | None = None,
                 prompt_scale_codes: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
                 batch_size: int | None = None, channel_names=None, stream_temperatures=None, condition=None,
                 guidance_scale: float = 1.0) -> dict:
        """Sample `num_patches` new patches of codes, continuing an optional prompt.

        Args:
            channel_indices: [B, C] (or [C]) channel-vocabulary indices, or channel names: one list for the
                batch or one list per sample (`channel_names=` is an alias).
            num_patches: patches (seconds) to generate, > 0.
            prompt_codes: optional [B, S, K, C, A'] codes kept verbatim at the start of the output;
                prompt_scale_codes [B, 2, C, A'] is required with it when the model has scale streams.
            temperature, top_k, top_p: sampling controls (temperature 0 = greedy). Stream m is sampled at
                `temperature` x `config.stream_temperature_scales[m]` (the model's own profile, if set).
            stream_temperatures: optional M temperatures, one per stream (layout order), replacing those
                (e.g. colder slow-band codes: see `neurorvq.lbm.sampling.band_temperatures`).
            generator: a `torch.Generator` for reproducible samples.
            use_cache: reuse the main transformer's keys/values (same samples, faster).
            batch_size: B when neither the prompt nor `channel_indices` [B, C] sets it (default 1).
            condition: a condition name of `config.condition_names` for every sample, one name per sample, or None
                (unconditional).
            guidance_scale: classifier-free guidance: logits = unconditional + scale * (conditional -
                unconditional); 1 = plain conditional sampling (one forward per step), > 1 sharpens the condition.

        Returns:
            dict with `codes` [B, S, K, C, A' + num_patches] and `scale_codes` [B, 2, C, A' + num_patches]
            (None when the model has no scale streams), ready for `NeuroRVQTokenizer.decode`.

        The context holds W = min(positions_per_context // C, max_patches) whole patches. When the patch being
        generated would not fit, the window slides forward so that it ends with that patch (dropping the oldest
        patches), time ids are re-based to the new window start, and the cache is rebuilt from the kept
        patches; so any length can be generated.
        """
        channels = channel_names if channel_indices is None else channel_indices
        temperatures, top_k, top_p = self._check_generation_controls(channels, num_patches, temperature, top_k, top_p,
                                                                     stream_temperatures)
        index, prompt, condition_ids, guidance, batch = self._generation_inputs(
            channels, prompt_codes, prompt_scale_codes, batch_size, condition, guidance_scale)
        sampler = CodeSampler(temperatures, top_k, top_p, generator, guidance)
        state = self._start_generation(index, prompt, num_patches, condition_ids, use_cache, sampler)
        for q in range(state.first_position, state.tokens.shape[1]):  # time-major: every channel of a patch, in turn
            self._slide_window(state, q)
            if self.flattened:
                self._sample_flattened_position(state, q)
            else:
                self._sample_depthwise_position(state, q)
        layout = self.code_layout
        codes, scale_codes = positions_to_codes(state.tokens[:batch] - self.stream_offsets(self.device),
                                                state.num_channels, layout.num_scales, layout.num_quantizers,
                                                layout.has_scale_codes)
        return {"codes": codes, "scale_codes": scale_codes}

    def _check_generation_controls(self, channels, num_patches, temperature, top_k, top_p, stream_temperatures):
        """Check `generate`'s channels (given at all), length and sampling controls -> (M per-stream temperatures,
        top_k, top_p)."""
        if channels is None:
            raise ValueError("pass channel_indices (or channel_names)")
        if isinstance(num_patches, bool) or not isinstance(num_patches, int) or num_patches <= 0:
            raise ValueError(f"num_patches must be a positive integer, got {num_patches!r}")
        temperature, top_k, top_p = check_sampling_controls(temperature, top_k, top_p)
        stream_temperatures = check_stream_temperatures(
            self.config, self.config.stream_temperatures(temperature) if stream_temperatures is None else stream_temperatures)
        return stream_temperatures, top_k, top_p

    def _generation_inputs(self, channels, prompt_codes, prompt_scale_codes, batch_size, condition, guidance_scale):
        """Check `generate`'s batch inputs and make the generation batch of B' rows (B, or 2B with guidance:
        `_guided_batch`).

        Returns (channel ids [B', C], prompt positions [B', A'*C, M] or None, condition ids [B'] or None, the guidance
        scale or None when unguided, B)."""
        batch = batch_size if prompt_codes is None else (prompt_codes.shape[0] if isinstance(prompt_codes, torch.Tensor)
                                                         and prompt_codes.dim() == 5 else None)
        index = self.channel_indices(channels, batch)
        batch, num_channels = index.shape
        prompt = self._check_prompt(prompt_codes, prompt_scale_codes, batch, num_channels)
        condition_ids = self._generation_conditions(condition, batch)
        guided, index, condition_ids, prompt = self._guided_batch(guidance_scale, index, condition_ids, prompt)
        return index, prompt, condition_ids, guidance_scale if guided else None, batch

    def _start_generation(self, index: torch.LongTensor, prompt: torch.LongTensor | None, num_patches: int,
                          condition_ids: torch.LongTensor | None, use_cache: bool,
                          sampler: CodeSampler) -> LBMGenerationState:
        """The token grid of the whole output (the prompt written in, offset), its channel and patch ids, and the
        context window W = min(positions_per_context // C, max_patches) whole patches (checked >= 1)."""
        num_channels = index.shape[1]
        window = min(self.config.positions_per_context // num_channels, self.config.max_patches)
        if window < 1:
            raise ValueError(f"{num_channels} channels do not fit in the context ({self.config.positions_per_context} "
                             "positions per window): use fewer channels or a model with a longer context")
        prompt_patches = 0 if prompt is None else prompt.shape[1] // num_channels
        total_patches = prompt_patches + num_patches
        tokens = torch.zeros(index.shape[0], total_patches * num_channels, self.num_streams, dtype=torch.long,
                             device=self.device)
        if prompt is not None:
            tokens[:, : prompt.shape[1]] = prompt + self.stream_offsets(self.device)
        channel_ids, patch_ids = channel_and_time_ids(index, total_patches)
        heads = self._stream_heads(self.token_embed.weight if self.flattened else self.depth_embed.weight)
        return LBMGenerationState(tokens, channel_ids, patch_ids, num_channels, window, condition_ids, use_cache,
                                  sampler, heads, first_position=prompt_patches * num_channels, time_ids=patch_ids)

    def _slide_window(self, state: LBMGenerationState, q: int) -> None:
        """Before sampling position q: slide the context window when q's patch would not fit in it (keep the newest
        W - 1 patches, re-base the time ids to the new window start, drop the cache), and with `use_cache` (re)build
        the cache from the window's positions before q."""
        patch = q // state.num_channels
        if patch - state.start_patch + 1 > state.window:
            state.start_patch, state.cache = patch - state.window + 1, None
            state.time_ids = state.patch_ids - state.start_patch
        if state.use_cache and state.cache is None:
            start = state.window_start
            state.cache = (self._run_positions(state.tokens[:, start:q], state.channel_ids[:, start:q],
                                               state.time_ids[:, start:q], None, state.condition_ids)[1]
                           if q > start else LBMCache([], None))

    def _sample_flattened_position(self, state: LBMGenerationState, q: int) -> None:
        """Flattened layout: sample the M codes of position q, one main step per stream, into `state.tokens`."""
        here = slice(q, q + 1)
        for stream in range(self.num_streams):
            if state.use_cache:
                cache = state.cache
                hidden, kv = self._main(state.tokens[:, :0, :1], cache.next_input, state.channel_ids[:, here],
                                        state.time_ids[:, here], torch.tensor([stream], device=self.device),
                                        cache.key_values, state.condition_ids)
            else:
                hidden = self._flattened_window_hidden(state, q, stream)
            code = state.sampler(self._one_stream_logits(hidden[:, -1], state.heads[stream], stream), stream)
            state.tokens[:, q, stream] = code + self._offsets[stream]
            if state.use_cache:
                state.cache = LBMCache(kv, state.tokens[:, q, stream:stream + 1])

    def _flattened_window_hidden(self, state: LBMGenerationState, q: int, stream: int) -> torch.Tensor:
        """Without a cache: the main transformer over the whole window so far, token by token, up to stream `stream`
        of position q -> hidden [B', T, D] (the last step predicts that stream)."""
        m, start, here = self.num_streams, state.window_start, slice(q, q + 1)
        done = torch.cat((state.tokens[:, start:q].flatten(1), state.tokens[:, q, :stream]), dim=1)
        streams = torch.cat((torch.arange(m, device=self.device).repeat(q - start),
                             torch.arange(stream + 1, device=self.device)))

        def per_token(ids: torch.Tensor) -> torch.Tensor:  # position ids [B', P] -> one per token of `done` and q
            return torch.cat((ids[:, start:q].repeat_interleave(m, dim=1), ids[:, here].expand(-1, stream + 1)), dim=1)

        hidden, _ = self._main(done[:, :, None], None, per_token(state.channel_ids), per_token(state.time_ids),
                               streams, None, state.condition_ids)
        return hidden

    def _sample_depthwise_position(self, state: LBMGenerationState, q: int) -> None:
        """Depth-wise layout: one main step for position q, then the depth transformer samples its M codes in stream
        order (one stream at a time, with its own key/value cache; input i as in `_depth`) into `state.tokens`."""
        tokens, start, here = state.tokens, state.window_start, slice(q, q + 1)
        if state.use_cache:
            hidden, kv = self._main(tokens[:, :0], state.cache.next_input, state.channel_ids[:, here],
                                    state.time_ids[:, here], None, state.cache.key_values, state.condition_ids)
        else:
            hidden, _ = self._main(tokens[:, start:q], None, state.channel_ids[:, start:q + 1],
                                   state.time_ids[:, start:q + 1], None, None, state.condition_ids)
        neighbour_inputs = self._position_neighbour_inputs(state, q)
        projected, depth_past = self.depth_in(hidden[:, -1]), None  # [B', d]
        extra = self._depth_offsets(None if neighbour_inputs is None else neighbour_inputs[:, 0])  # [B', M, d]
        step = projected + extra[..., 0, :]
        for stream in range(self.num_streams):
            depth, depth_past = self.depth_transformer(step[:, None], depth_past)
            code = state.sampler(self._one_stream_logits(depth[:, 0], state.heads[stream], stream), stream)
            tokens[:, q, stream] = code + self._offsets[stream]
            if stream + 1 < self.num_streams:
                step = projected + self.depth_embed(tokens[:, q, stream]) + extra[..., stream + 1, :]
        if state.use_cache:
            state.cache = LBMCache(kv, tokens[:, q])

    def _position_neighbour_inputs(self, state: LBMGenerationState, q: int) -> torch.Tensor | None:
        """Depth inputs [B', 1, M, d] of position q from its already sampled neighbours (`depth_neighbours`: the
        previous channel and one second earlier; `spatial_context`: the earlier channels of its second), or None."""
        tokens, num_channels = state.tokens, state.num_channels
        neighbour_inputs = None
        if self.previous_channel_in is not None:  # time-major: q - 1 (same second) and q - C
            none = torch.full_like(tokens[:, q], -1)
            neighbour_inputs = self._neighbour_inputs(torch.stack(
                (tokens[:, q - 1] if q % num_channels else none,
                 tokens[:, q - num_channels] if q >= num_channels else none), dim=-1)[:, None])
        if self.spatial_in is not None:
            second = slice(q - q % num_channels, q + 1)
            spatial = self._spatial_inputs(tokens[:, second], state.channel_ids[:, second],
                                           state.time_ids[:, second])[:, -1:]
            neighbour_inputs = spatial if neighbour_inputs is None else neighbour_inputs + spatial
        return neighbour_inputs
