"""NeuroRVQ spatial LBM: every channel of a second generated together, in a few parallel rounds.

The unit of generation is one second of all C channels, each channel carrying M code streams (two amplitude scale
tokens, then S bands x K residual stages; see `layout.py`). There is no privileged channel order:

- **Main transformer** over (second a, channel c) tokens, block-causal in time. Token (a, c) = the sum of its M code
  embeddings + its channel embedding (+ an embedding of its electrode's 3-D position) + a time embedding; it attends
  every channel of seconds <= a. Its output is the context of channel c for second a + 1 (a learned BOS before the
  first second of the window).
- **Spatial transformer** over the C channels of one second, bidirectional: the input of channel c = its projected
  context + the embeddings of its codes known so far (a per-stream mask embedding for the hidden ones) + its channel
  embedding (+ a condition embedding of its own, with `config.spatial_condition`). Each output predicts the
  channel's hidden codes through per-stream heads tied to the code embeddings, with the Gaussian codeword scores of
  the depth-wise model (`codeword_logits`: nearby codewords share probability).
- **Training** (`forward(labels=True)`): per second, a random set of cells (channel x stream) is hidden: with stream
  groups (`config.stream_groups`), a group g is drawn, the groups before it are known, the groups after it hidden,
  and k ~ U{1..N_g} of its N_g cells hidden. The loss G |g| / (M k) x the summed cross-entropy of those k cells is an
  unbiased estimate of the any-order autoregressive bound on -log p(second | past) per code (Uria et al. 2014;
  Hoogeboom et al. 2022, ARDM): bits per position, comparable with causal LBMs and count models (an upper bound).
- **Generation** (`generate`): per second and group, `num_rounds` rounds (MaskGIT, Chang et al. 2022): each samples
  every hidden cell in parallel and keeps the most confident ones (or a random share), on a cosine schedule, then the
  second enters the main transformer's key/value cache. Sampling defaults live in `model.generation_config`
  (temperature, per-stream temperature scales, top-k / top-p, guidance, rounds, unmasking), saved with the model.

Shapes at the boundary are those of `LBMForCausalLM`: `forward(positions [B, P, M], channel_ids [B, P],
time_ids [B, P])` with time-major positions (p = a * C + c), and `generate` returns codes [B, S, K, C, A].
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from neurorvq.tokenizer.loading import load_pretrained

from .configuration_lbm_spatial import LBMSpatialConfig
from .layout import positions_to_codes
from .modeling_lbm import (
    LBMInputsMixin,
    LBMTransformer,
    code_embedding_features,
    init_block_weights,
    projected_features,
    stream_codebooks,
    top_k_filter,
    top_p_filter,
)
from .sampling import check_number, check_sampling_controls, check_stream_temperatures

PAIR_KEY_SIZE = 16  # per head, the channel-pair weights of `codeword_context`
ELECTRODE_FREQUENCIES = 4  # sin / cos of each coordinate at 1..4 half-cycles per head radius
UNMASKING = ("confidence", "random", "spread")


def default_generation_config() -> GenerationConfig:
    """Sampling defaults of a fresh spatial LBM (a trained one saves its own, chosen by measurement)."""
    return GenerationConfig(do_sample=True, temperature=1.0, top_k=None, top_p=None, guidance_scale=1.0,
                            num_rounds=12, unmasking="confidence", stream_temperature_scales=None,
                            last_round_temperature_scale=1.0)


@functools.lru_cache(maxsize=1)
def _standard_1005_positions() -> dict:
    """Lower-case channel name -> 3-D position (m) in MNE's standard 10-05 montage (read once per process)."""
    import mne

    with warnings.catch_warnings():  # the montage's name is deprecated in newer MNE, its positions are not
        warnings.simplefilter("ignore")
        montage = mne.channels.make_standard_montage("standard_1005")
    return {name.lower(): xyz for name, xyz in montage.get_positions()["ch_pos"].items()}


def electrode_positions(channel_vocabulary: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3-D electrode positions of a channel vocabulary from MNE's standard 10-05 montage, in head radii:
    (xyz [size, 3], known [size] 1.0 / 0.0). Names are matched case-insensitively; others get zeros, known 0."""
    positions = _standard_1005_positions()
    # numpy, not torch: this runs inside transformers' meta-device context when a saved model is loaded
    xyz, known = np.zeros((size, 3), dtype=np.float32), np.zeros(size, dtype=np.float32)
    for i, name in enumerate(channel_vocabulary):
        if name in positions:
            xyz[i], known[i] = positions[name], 1.0
    radius = float(np.median(np.linalg.norm(xyz[known > 0], axis=-1))) if known.any() else 1.0
    return torch.from_numpy(xyz / radius), torch.from_numpy(known)


def _spread_order(distances: torch.Tensor, streams: int, uniform) -> torch.Tensor:
    """Channel distances [B, C, C] -> per row and stream, a farthest-point rank of every channel [B, C, M] (0 = a
    random first channel, then each next the one farthest from those before it, ties broken at random): channels
    ranked next to each other are far apart. `uniform(*shape)` draws the randomness."""
    batch, channels = distances.shape[:2]
    jitter = 1e-3 * uniform(batch, streams, channels)  # [B, M, C]
    rank = torch.empty(batch, streams, channels, dtype=torch.long, device=distances.device)
    taken = torch.zeros(batch, streams, channels, dtype=torch.bool, device=distances.device)
    nearest = torch.full((batch, streams, channels), float("inf"), device=distances.device)  # to the ranked ones
    rows = torch.arange(batch, device=distances.device)[:, None]
    for k in range(channels):
        pick = (jitter if k == 0 else torch.where(taken, -1.0, nearest + jitter)).argmax(-1)  # [B, M]
        rank.scatter_(2, pick[..., None], k)
        taken.scatter_(2, pick[..., None], True)
        nearest = torch.minimum(nearest, distances[rows, pick])  # [B, M, C]
    return rank.transpose(1, 2)


def _top_cells(score: torch.Tensor, count: int) -> torch.Tensor:
    """score [B, N] -> bool [B, N]: the `count` highest of each row."""
    return torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(count, dim=1).indices, True)


@dataclass
class LBMSpatialOutput(ModelOutput):
    """Output of [`LBMForSpatialGeneration.forward`].

    Args:
        loss (`torch.FloatTensor` []): the any-order bound on the NLL, nats per code, averaged over real seconds (only
            with `labels`).
        logits (`torch.FloatTensor` [B, P, M, V_max]): scores of every cell given the past and the cells of its
            second that were known (`hidden_mask` False); -inf past each stream's vocabulary.
        hidden_mask (`torch.BoolTensor` [B, P, M]): the cells hidden from the spatial transformer.
        scored_mask (`torch.BoolTensor` [B, P, M]): the hidden cells that entered the loss.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_mask: torch.BoolTensor | None = None
    scored_mask: torch.BoolTensor | None = None


class LBMSpatialPreTrainedModel(PreTrainedModel):
    config_class = LBMSpatialConfig
    base_model_prefix = "lbm"
    main_input_name = "positions"
    supports_gradient_checkpointing = False
    _no_split_modules = ["LBMBlock"]

    @classmethod
    def can_generate(cls) -> bool:  # a `generation_config` is created, saved and loaded with the model
        return True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if init_block_weights(module, std):
            return
        if isinstance(module, LBMForSpatialGeneration):
            # code and mask embeddings at d^-1/2, not 0.02: they are the spatial transformer's message between channels
            # and the tied heads' rows; at 0.02 they vanish beside the context and learning stalls (as the depth-wise
            # model's depth embeddings did)
            width = module.token_embed.weight.shape[1] ** -0.5
            init.normal_(module.token_embed.weight, std=width)
            init.normal_(module.mask_embed, std=width)
            init.normal_(module.bos, std=std)
            init.copy_(module.stream_proj, torch.eye(module.stream_proj.shape[-1]).expand_as(module.stream_proj))
            if module.codeword_mean is not None:  # mean 0, broad precision: the plain head's logits at step 0
                init.zeros_(module.codeword_mean.weight)
                init.zeros_(module.codeword_precision)
                init.zeros_(module.codeword_log_precision)
            if module.codeword_context_in is not None:
                init.zeros_(module.codeword_context_in)  # the codeword context starts switched off
            if module.spatial_condition_embed is not None:
                init.zeros_(module.spatial_condition_embed.weight)  # so does the spatial condition


class LBMForSpatialGeneration(LBMInputsMixin, LBMSpatialPreTrainedModel):
    """Spatial LBM over NeuroRVQ codes: a second of every channel at a time (see the module docstring).

    Example:

    ```python
    >>> config = LBMSpatialConfig.from_tokenizer_config(tokenizer.config)
    >>> model = LBMForSpatialGeneration(config)
    >>> model(positions, channel_ids, time_ids, labels=True).loss.backward()      # [B, A*C, M], [B, A*C] x 2
    >>> out = model.generate(["fp1", "cz", "o1"], num_patches=10, batch_size=2)   # model.generation_config
    >>> eeg = tokenizer.decode(out["codes"], ["fp1", "cz", "o1"], scale_codes=out["scale_codes"])
    ```
    """

    def __init__(self, config: LBMSpatialConfig):
        super().__init__(config)
        self._init_code_tables(config)
        layout = self.code_layout
        dim = config.hidden_size

        self.token_embed = nn.Embedding(layout.vocab_size, dim)  # offset vocabulary; also the tied stream heads
        self.channel_embed = nn.Embedding(config.channel_vocab_size, dim)
        self.time_embed = nn.Embedding(config.max_patches, dim)
        self.bos = nn.Parameter(torch.zeros(dim))
        self.mask_embed = nn.Parameter(torch.zeros(self.num_streams, dim))
        self.condition_embed = nn.Embedding(config.num_conditions + 1, dim) if config.num_conditions else None
        self.spatial_condition_embed = (nn.Embedding(config.num_conditions + 1, dim)
                                        if config.num_conditions and config.spatial_condition else None)
        self.electrode_in = None
        if config.electrode_positions:
            xyz, known = electrode_positions(config.channel_vocabulary, config.channel_vocab_size)
            self.register_buffer("electrode_xyz", xyz)
            self.register_buffer("electrode_known", known)
            self.electrode_in = nn.Linear(6 * ELECTRODE_FREQUENCIES, dim, bias=False)
        self.drop = nn.Dropout(config.dropout)
        self.transformer = LBMTransformer(dim, config.num_layers, config.num_heads, config.mlp_ratio, config.dropout,
                                          config.layer_norm_eps)
        self.context_in = nn.Linear(dim, dim, bias=False)
        self.spatial_transformer = LBMTransformer(dim, config.spatial_layers, config.num_heads, config.mlp_ratio,
                                                  config.dropout, config.layer_norm_eps)
        self.stream_proj = nn.Parameter(torch.zeros(self.num_streams, dim, dim))  # per-stream head input
        self._init_codeword_tables(config, dim)
        self.pair_query = self.pair_key = self.codeword_context_in = None
        if config.codeword_context:
            heads = config.spatial_heads
            self.pair_query = nn.Linear(dim, heads * PAIR_KEY_SIZE, bias=False)
            self.pair_key = nn.Linear(dim, heads * PAIR_KEY_SIZE, bias=False)
            # per head: the mean codewords (side by side) and known shares (M) -> the spatial transformer's input
            self.codeword_context_in = nn.Parameter(torch.zeros(heads, self.codewords.shape[1] + self.num_streams, dim))
            # the stream of each codeword dim (a list: this runs inside transformers' meta-device context on loading)
            self._codeword_stream = [m for m, (start, end) in enumerate(self._codeword_slices) for _ in range(start, end)]
        groups = config.groups
        self._group_of_stream = [next(g for g, group in enumerate(groups) if m in group) for m in range(self.num_streams)]
        self.post_init()
        if self.generation_config is None or not hasattr(self.generation_config, "num_rounds"):
            self.generation_config = default_generation_config()

    # ---- tables -------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_code_embeddings(self, tokenizer, seed: int = 0) -> None:
        """Start the code embeddings (and so the tied heads) with the codes' geometry and copy the tokenizer's
        codewords (see `LBMForCausalLM.init_code_embeddings`)."""
        generator = torch.Generator().manual_seed(seed)
        codebooks = stream_codebooks(tokenizer, self.code_layout)
        if self.codeword_mean is not None:
            self._copy_codewords(codebooks)
        features = code_embedding_features(self.code_layout, codebooks)
        weight = self.token_embed.weight  # at the std of `_init_weights`: d^-1/2
        weight.copy_(projected_features(features, weight.shape[1], weight.shape[1] ** -0.5, generator).to(weight))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus the bundled names (e.g. `"neurorvq/lbm-small"`, offline), and the
        folder's `generation_config.json` (the sampling defaults saved with the model) unless `generation_config=`."""
        generation_config = kwargs.pop("generation_config", None)
        model = load_pretrained(super().from_pretrained, pretrained_model_name_or_path, cls.config_class.model_type,
                                *args, **kwargs)
        saved = Path(model.name_or_path) / "generation_config.json"
        if generation_config is not None:
            model.generation_config = generation_config
        elif saved.is_file():
            model.generation_config = GenerationConfig.from_pretrained(saved.parent)
        return model

    # ---- pieces -------------------------------------------------------------------------------------

    def _place(self, channel_ids: torch.Tensor) -> torch.Tensor:
        """Channel ids [..., C] -> channel embeddings [..., C, D] (+ electrode position features where known)."""
        x = self.channel_embed(channel_ids)
        if self.electrode_in is not None:
            xyz = self.electrode_xyz[channel_ids]  # [..., C, 3]
            angles = xyz[..., None] * (math.pi * torch.arange(1, ELECTRODE_FREQUENCIES + 1, device=xyz.device))
            features = torch.cat((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # [..., C, 6F]
            x = x + self.electrode_in(features) * self.electrode_known[channel_ids][..., None]
        return x

    def _channel_distances(self, channel_ids: torch.Tensor) -> torch.Tensor | None:
        """Channel ids [B, C] -> distances between their electrodes [B, C, C] (head radii; None without electrode
        positions)."""
        if self.electrode_in is None:
            return None
        xyz = self.electrode_xyz[channel_ids]
        return torch.cdist(xyz, xyz)

    @staticmethod
    def _embed_condition(table: nn.Embedding | None, condition_ids: torch.Tensor | None, batch: int,
                         device) -> torch.Tensor | float:
        """Rows of a condition embedding `table` [B, D] (ids None = unconditional, id 0), or 0. without one."""
        if table is None:
            return 0.0
        if condition_ids is None:
            condition_ids = torch.zeros(batch, dtype=torch.long, device=device)
        return table(condition_ids)

    def _condition(self, condition_ids: torch.Tensor | None, batch: int, device) -> torch.Tensor | float:
        """The main transformer's condition embeddings [B, D], or 0. for a model without conditions."""
        return self._embed_condition(self.condition_embed, condition_ids, batch, device)

    def _spatial_condition(self, condition_ids: torch.Tensor | None, batch: int, device) -> torch.Tensor | float:
        """The spatial transformer's condition embeddings [B, 1, D] (`config.spatial_condition`), or 0."""
        condition = self._embed_condition(self.spatial_condition_embed, condition_ids, batch, device)
        return condition[:, None] if torch.is_tensor(condition) else condition

    def _context(self, tokens: torch.LongTensor, place: torch.Tensor, time_ids: torch.Tensor, condition,
                 past: list | None = None, past_seconds: int = 0):
        """Main transformer over whole seconds.

        tokens [B, A, C, M] (offset vocabulary), place [B, C, D], time_ids [A] (window-relative seconds),
        condition [B, D] or 0., past: per-layer (k, v) of `past_seconds` earlier seconds.
        Returns (hidden [B, A, C, D]: the context for each following second, per-layer (k, v)).
        """
        batch, seconds, channels, _ = tokens.shape
        x = self.token_embed(tokens).sum(3) + place[:, None] + self.time_embed(time_ids)[None, :, None]
        if torch.is_tensor(condition):
            x = x + condition[:, None, None]
        query = torch.arange(past_seconds, past_seconds + seconds, device=x.device).repeat_interleave(channels)
        key = torch.arange(past_seconds + seconds, device=x.device).repeat_interleave(channels)
        mask = False if seconds == 1 else key[None, :] <= query[:, None]  # [A*C, (past + A)*C]: block-causal
        hidden, key_values = self.transformer(self.drop(x.flatten(1, 2)), past, mask)
        return hidden.view(batch, seconds, channels, -1), key_values

    def _first_context(self, batch: int, channels: int, condition) -> torch.Tensor:
        """The context of a window's first second: BOS (+ condition) -> [B, C, D]."""
        bos = self.bos.expand(batch, channels, -1)
        return bos + condition[:, None] if torch.is_tensor(condition) else bos

    def _cell_embeddings(self, tokens: torch.LongTensor, hidden: torch.Tensor) -> torch.Tensor:
        """tokens [N, C, M] (offset vocabulary), hidden [N, C, M] -> the sum over each channel's streams of its code
        embedding, or its stream's mask embedding where hidden [N, C, D]."""
        return torch.where(hidden[..., None], self.mask_embed, self.token_embed(tokens)).sum(2)

    def _spatial(self, inputs: torch.Tensor, tokens: torch.LongTensor, hidden: torch.Tensor,
                 pair_weights: torch.Tensor | None = None, codeword_table: torch.Tensor | None = None) -> torch.Tensor:
        """Spatial transformer over the channels of seconds.

        inputs [N, C, D] (projected context + channel embeddings + `_cell_embeddings`), tokens [N, C, M] (offset
        vocabulary; any value where hidden), hidden [N, C, M] bool, pair_weights [N, H, C, C] (`_pair_weights`, with
        `codeword_context`), codeword_table (`_codeword_table()`, made when not given) -> output [N, C, D]."""
        x = inputs
        if self.codeword_context_in is not None:
            context = self._codeword_context(tokens, hidden, pair_weights, codeword_table)
            # [N, C, H x F] @ [H x F, D]: one product over heads and features
            x = x + context.transpose(1, 2).flatten(2) @ self.codeword_context_in.flatten(0, 1)
        out, _ = self.spatial_transformer(self.drop(x), None, False)
        return out

    def _pair_weights(self, place: torch.Tensor) -> torch.Tensor | None:
        """Channel embeddings [N, C, D] -> per head, softmax weights over the other channels [N, H, C, C] (0 on the
        diagonal; all 0 for a single channel); None without `codeword_context`."""
        if self.pair_query is None:
            return None
        heads, channels = self.config.spatial_heads, place.shape[1]
        query = self.pair_query(place).unflatten(-1, (heads, PAIR_KEY_SIZE)).transpose(1, 2)  # [N, H, C, K]
        key = self.pair_key(place).unflatten(-1, (heads, PAIR_KEY_SIZE)).transpose(1, 2)
        scores = (query @ key.transpose(-1, -2)) / math.sqrt(PAIR_KEY_SIZE)
        itself = torch.eye(channels, dtype=torch.bool, device=place.device)
        return scores.masked_fill(itself, float("-inf")).softmax(-1).nan_to_num(0.0)

    def _codeword_context(self, tokens: torch.LongTensor, hidden: torch.Tensor, pair_weights: torch.Tensor,
                          codeword_table: torch.Tensor | None = None) -> torch.Tensor:
        """Per head, the pair-weighted mean of the other channels' known codewords and their known shares:
        tokens [N, C, M], hidden [N, C, M], pair_weights [N, H, C, C] -> [N, H, C, sum D_m + M]. With normalization
        "known" each stream's mean is over the channels where that stream is known (0 where none is)."""
        known = (~hidden).to(pair_weights.dtype)
        words = pair_weights @ self._codeword_vectors(tokens, hidden, codeword_table)[:, None]  # [N, H, C, sum D_m]
        share = pair_weights @ known[:, None]  # [N, H, C, M]: the weight of the known cells, per stream
        if self.config.codeword_context_normalization == "known":  # hidden words are 0: the clamp only guards 0 / 0
            words = words / share[..., self._codeword_stream].clamp_min(1e-12)
        return torch.cat((words, share), dim=-1)

    def _codeword_table(self) -> torch.Tensor:
        """[sum V_m, sum D_m]: row offset_m + v holds stream m's codeword v in its own slice and zeros elsewhere, so a
        cell's M codewords side by side are one embedding-bag sum over its offset tokens (exact: the others add 0)."""
        rows = []
        for m, (start, end) in enumerate(self._codeword_slices):
            row = self.codewords.new_zeros(self._stream_sizes[m], self.codewords.shape[1])
            row[:, start:end] = self.codewords[: self._stream_sizes[m], start:end]
            rows.append(row)
        return torch.cat(rows)

    def _codeword_vectors(self, tokens: torch.LongTensor, hidden: torch.Tensor,
                          table: torch.Tensor | None = None) -> torch.Tensor:
        """Offset tokens [N, C, M] -> each stream's codeword side by side [N, C, sum D_m], 0 where hidden; `table` is
        `_codeword_table()` (made here when not given)."""
        table = self._codeword_table() if table is None else table
        weights = (~hidden).to(table.dtype).reshape(-1, self.num_streams)
        words = F.embedding_bag(tokens.reshape(-1, self.num_streams), table, per_sample_weights=weights, mode="sum")
        return words.view(*tokens.shape[:-1], -1)

    def _logits(self, out: torch.Tensor, heads: dict | None = None) -> torch.Tensor:
        """Spatial output [..., D] -> every stream's logits [..., M, V_max] (training and scoring; `_grid_logits`;
        `heads` = `_stream_heads()`, made when not given)."""
        heads = self._stream_heads() if heads is None else heads
        flat = out.reshape(-1, out.shape[-1])
        logits = self._grid_logits(flat[None].expand(self.num_streams, -1, -1), heads)  # [M, n, V]
        return logits.transpose(0, 1).reshape(*out.shape[:-1], self.num_streams, -1)

    def _draw_hidden(self, batch: int, seconds: int, channels: int, device, generator: torch.Generator | None):
        """Random training masks, per second: (hidden [B, A, C, M], scored [B, A, C, M], weight [B, A]) — see the
        module docstring (any-order bound within the drawn group g; groups after g hidden, not scored)."""
        groups = self.config.groups
        m = self.num_streams
        group_of = torch.tensor(self._group_of_stream, device=device)  # [M]
        group_sizes = torch.tensor([len(g) for g in groups], device=device)
        rand = lambda *shape: torch.rand(*shape, generator=generator, device=device)  # noqa: E731
        group = (rand(batch, seconds) * len(groups)).long().clamp(max=len(groups) - 1)  # [B, A]
        cells = channels * group_sizes[group]  # N_g
        k = (rand(batch, seconds) * cells).long().clamp(max=cells - 1) + 1  # U{1..N_g}
        in_group = (group_of == group[..., None, None]).expand(batch, seconds, channels, m)
        later = (group_of > group[..., None, None]).expand(batch, seconds, channels, m)
        scores = torch.where(in_group, rand(batch, seconds, channels, m), 2.0)  # cells outside g rank last
        rank = scores.flatten(2).argsort(-1).argsort(-1).view(batch, seconds, channels, m)
        scored = in_group & (rank < k[..., None, None])
        weight = len(groups) * group_sizes[group] / (m * k)
        return scored | later, scored, weight

    # ---- training / scoring forward -------------------------------------------------------------------

    def forward(self, positions: torch.LongTensor, channel_ids: torch.LongTensor, time_ids: torch.LongTensor,
                labels: bool | None = None, attention_mask: torch.Tensor | None = None,
                position_mask: torch.Tensor | None = None, condition_ids: torch.Tensor | None = None,
                hidden_mask: torch.Tensor | None = None, mask_generator: torch.Generator | None = None,
                return_dict: bool | None = None) -> LBMSpatialOutput:
        """Score whole seconds with random hidden cells (training) or given ones.

        Args:
            positions: [B, P, M] stream codes, time-major (p = a * C + c) over whole seconds of the same C channels.
            channel_ids / time_ids: [B, P]; time ids are window-relative seconds (< `max_patches`), the same for every
                row of the batch.
            labels: `True` = the loss over the scored hidden cells (the NLL bound, nats per code).
            attention_mask / position_mask: optional [B, P], 1 = real position; seconds that are padding are left out
                of the loss (pad whole seconds on the right).
            condition_ids: optional [B] condition of each window (0 or None = unconditional).
            hidden_mask: optional [B, P, M] bool cells to hide (all of them are scored, weight 1 per code); default: a
                random draw (`_draw_hidden`), from `mask_generator` or, in eval mode without one, a generator seeded 0
                (so validation is deterministic), else torch's global RNG (restored on resume with the trainer's
                RNG state).

        Returns:
            [`LBMSpatialOutput`]: `loss`, `logits` [B, P, M, V_max], `hidden_mask`, `scored_mask`.
        """
        self._check_positions(positions)
        batch, num_positions, m = positions.shape
        self._check_ids(channel_ids, "channel_ids", (batch, num_positions), self.config.channel_vocab_size)
        self._check_ids(time_ids, "time_ids", (batch, num_positions), self.config.max_patches)
        if num_positions > self.config.max_positions:
            raise ValueError(f"context too long: {num_positions} positions > max_positions={self.config.max_positions}")
        channels = int((time_ids[0] == time_ids[0, 0]).sum())
        seconds = num_positions // channels
        if seconds * channels != num_positions or bool((time_ids != time_ids[:1]).any()):
            raise ValueError("positions must be whole seconds of the same channels, with the same time ids in every row")
        grid = lambda x: x.reshape(batch, seconds, channels, *x.shape[2:])  # noqa: E731  [B, P, ...] -> [B, A, C, ...]
        if not bool((grid(channel_ids) == grid(channel_ids)[:, :1]).all()):
            raise ValueError("every second must list the same channels in the same order (time-major positions)")
        condition_ids = self._check_condition_ids(condition_ids, batch)
        condition = self._condition(condition_ids, batch, positions.device)
        tokens = grid(positions.long() + self.stream_offsets(positions.device))  # [B, A, C, M]
        place = self._place(grid(channel_ids)[:, 0].long())  # [B, C, D]
        hidden_states, _ = self._context(tokens, place, grid(time_ids)[0, :, 0].long(), condition)
        context = torch.cat((self._first_context(batch, channels, condition)[:, None], hidden_states[:, :-1]), dim=1)

        if hidden_mask is None:
            if mask_generator is None and not self.training:
                mask_generator = torch.Generator(device=positions.device).manual_seed(0)
            hidden, scored, weight = self._draw_hidden(batch, seconds, channels, positions.device, mask_generator)
        else:
            if tuple(hidden_mask.shape) != tuple(positions.shape):
                raise ValueError(f"hidden_mask must have shape {tuple(positions.shape)}, got {tuple(hidden_mask.shape)}")
            hidden = scored = grid(hidden_mask.bool())
            weight = torch.ones(batch, seconds, device=positions.device)
        spatial_place = place + self._spatial_condition(condition_ids, batch, positions.device)  # [B, C, D]
        inputs = (self.context_in(context) + spatial_place[:, None]).flatten(0, 1)  # [B * A, C, D]
        pair_weights = self._pair_weights(place)
        if pair_weights is not None:  # the same channels in every second
            pair_weights = pair_weights.repeat_interleave(seconds, dim=0)
        second_tokens, second_hidden = tokens.flatten(0, 1), hidden.flatten(0, 1)  # [B * A, C, M]
        inputs = inputs + self._cell_embeddings(second_tokens, second_hidden)
        heads = self._stream_heads()  # once per forward: the heads and the codeword table
        out = self._spatial(inputs, second_tokens, second_hidden, pair_weights, heads.get("codeword_table"))
        logits = self._logits(out, heads).view(batch, seconds, channels, m, -1)

        loss = None
        if labels is not None and labels is not False:
            if labels is not True:
                raise ValueError("labels must be True: the model scores the positions it is given")
            cross_entropy = F.cross_entropy(logits.flatten(0, 3).float(), (tokens - self.stream_offsets(tokens.device))
                                            .flatten(), reduction="none").view(batch, seconds, channels, m)
            per_second = (cross_entropy * scored).sum((2, 3)) * weight  # [B, A]
            mask = position_mask if position_mask is not None else attention_mask
            real = torch.ones_like(per_second) if mask is None else grid(mask.bool())[:, :, 0].float()
            if mask is not None and tuple(mask.shape) != (batch, num_positions):
                raise ValueError(f"position_mask must have shape {(batch, num_positions)}, got {tuple(mask.shape)}")
            loss = (per_second * real).sum() / real.sum().clamp(min=1.0)
        flat = lambda x: x.reshape(batch, num_positions, *x.shape[3:])  # noqa: E731
        return LBMSpatialOutput(loss=loss, logits=flat(logits), hidden_mask=flat(hidden), scored_mask=flat(scored))

    # ---- generation ---------------------------------------------------------------------------------

    def _sampling_settings(self, generation_config, **overrides) -> dict:
        """The sampling settings of a call: `generation_config` (default: the model's) with the non-None overrides,
        validated (`conditional`: whether the call has a condition; the saved guidance scale applies only then).
        Returns temperature, top_k, top_p, stream_temperatures (M floats), guidance_scale, num_rounds,
        unmasking, last_round_temperature_scale, choice_temperature (default: the temperature), window_shift (see
        `generate`)."""
        config = generation_config or self.generation_config
        value = lambda name, default=None: overrides[name] if overrides.get(name) is not None \
            else getattr(config, name, default)  # noqa: E731
        temperature, top_k, top_p = check_sampling_controls(value("temperature", 1.0), value("top_k"), value("top_p"))
        if overrides.get("stream_temperatures") is not None:
            streams = check_stream_temperatures(self.config, overrides["stream_temperatures"])
        else:
            scales = getattr(config, "stream_temperature_scales", None) or [1.0] * self.num_streams
            streams = check_stream_temperatures(self.config, [temperature * s for s in scales])
        # the saved guidance applies to conditional calls; an explicit one is checked (`_guided_batch`) by `generate`
        guidance = value("guidance_scale", 1.0) if overrides.get("conditional", True) else \
            (overrides["guidance_scale"] if overrides.get("guidance_scale") is not None else 1.0)
        rounds = value("num_rounds", 12)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"num_rounds must be an integer >= 1, got {rounds!r}")
        unmasking = value("unmasking", "confidence")
        if unmasking not in UNMASKING:
            raise ValueError(f"unmasking must be one of {UNMASKING}, got {unmasking!r}")
        last_round = check_number("last_round_temperature_scale", value("last_round_temperature_scale", 1.0),
                                  note="1 = every round at the temperature")
        choice = value("choice_temperature")
        if choice is not None:
            choice = check_number("choice_temperature", choice, note="None = the temperature")
        shift = getattr(config, "window_shift", None)
        if shift is not None:
            shift = check_number("window_shift", shift, 0.0, 1.0, low_open=True,
                                 note="a share of the context window, or None")
        return {"temperature": temperature, "top_k": top_k, "top_p": top_p, "stream_temperatures": streams,
                "guidance_scale": guidance, "num_rounds": rounds, "unmasking": unmasking,
                "last_round_temperature_scale": last_round,
                "choice_temperature": temperature if choice is None else choice, "window_shift": shift}

    def _stream_heads(self) -> dict:
        """The stream heads folded into per-stream matrices (differentiable: training computes them per forward,
        generation once per call). Plain heads: `weight` [M, D, V_max] (logits = out @ weight[m]). With codeword
        scores, logits = out @ weight[m] + precision x (mean . w_j - ||w_j||^2 / 2), where precision is a scalar per
        cell, so each stream's three terms are one product with its rows stacked:
        - folded streams (`folded`): `folded_weight` [M_f, 2D + 1, V_max] = [weight; mean map . w_j; ||w_j||^2 / 2],
          applied to [out, precision x out, -precision];
        - factored streams (`factored`: narrow codewords, where the mean is cheaper as its own R values):
          `codeword_in` [M_n, D, R] (out -> mean, R = the widest narrow codeword, zero-padded) and `factored_weight`
          [M_n, D + R + 1, V_max] = [weight; w_j; ||w_j||^2 / 2], applied to [out, precision x mean, -precision].
        Also `precision` [M, D], `precision_bias` [M] (log-precision = out . precision[m] + bias[m]), `folded_index`
        / `factored_index` (tensors of the two lists), `invalid` [M, V_max] (codes past each stream's vocabulary),
        and `codeword_table` with `codeword_context`. (At batch 1 a generation round is bound by reading these.)"""
        m, device = self.num_streams, self.token_embed.weight.device
        width, dim = max(self._stream_sizes), self.stream_proj.shape[-1]
        sizes = torch.tensor(self._stream_sizes, device=device)
        codes = torch.arange(width, device=device)
        index = self.stream_offsets(device)[:, None] + torch.minimum(codes, sizes[:, None] - 1)
        proj = self.stream_proj  # [M, D, D]: query = out @ proj[m]
        weight = proj @ self.token_embed.weight[index].transpose(1, 2)  # [M, D, V_max]
        heads = {"weight": weight, "invalid": codes >= sizes[:, None]}
        if self.codeword_mean is not None:
            maps, words, norms = [], [], []  # per stream: query -> mean [D, D_m], codewords [V_max, D_m], [1, V_max]
            for stream, (start, end) in enumerate(self._codeword_slices):
                words.append(F.pad(self.codewords[: self._stream_sizes[stream], start:end],
                                   (0, 0, 0, width - self._stream_sizes[stream])))
                maps.append(proj[stream] @ self.codeword_mean.weight[start:end].T)
                norms.append(0.5 * (words[-1] * words[-1]).sum(-1)[None])
            dims = [end - start for start, end in self._codeword_slices]
            factored = [s for s in range(m) if dims[s] * (dim + width) < dim * width]
            folded = [s for s in range(m) if s not in factored]
            rank = max((dims[s] for s in factored), default=0)
            as_index = lambda streams: torch.tensor(streams, dtype=torch.long, device=device)  # noqa: E731
            heads.update(folded=folded, factored=factored, folded_index=as_index(folded),
                         factored_index=as_index(factored),
                         precision=(proj @ self.codeword_precision[:, :, None])[..., 0],
                         precision_bias=self.codeword_log_precision)
            if folded:
                heads["folded_weight"] = torch.stack([torch.cat((weight[s], maps[s] @ words[s].T, norms[s]))
                                                      for s in folded])
            if factored:
                heads["codeword_in"] = torch.stack([F.pad(maps[s], (0, rank - dims[s])) for s in factored])
                heads["factored_weight"] = torch.stack([torch.cat((weight[s], F.pad(words[s], (0, rank - dims[s])).T,
                                                                   norms[s])) for s in factored])
        if self.codeword_context_in is not None:
            heads["codeword_table"] = self._codeword_table()
        return heads

    @staticmethod
    def _grid_logits(grid: torch.Tensor, heads: dict) -> torch.Tensor:
        """Head inputs grouped by stream [M, n, D] (row i of stream m: one cell of stream m) and `_stream_heads()` ->
        logits [M, n, V_max] (-inf past each stream's vocabulary): the tied code-embedding scores + the Gaussian
        codeword scores precision * (mean . w_j - ||w_j||^2 / 2) = -precision / 2 * ||w_j - mean||^2 + a constant."""
        if "precision" not in heads:
            return torch.bmm(grid, heads["weight"]).masked_fill(heads["invalid"][:, None], float("-inf"))
        log_precision = (grid * heads["precision"][:, None]).sum(-1) + heads["precision_bias"][:, None]
        precision = log_precision.clamp(-12.0, 12.0).exp()[..., None]  # [M, n, 1]
        parts = []
        for part, index in (("folded", heads["folded_index"]), ("factored", heads["factored_index"])):
            if len(index) == 0:
                continue
            rows = (lambda x: x) if len(index) == len(grid) else (lambda x: x.index_select(0, index))  # noqa: E731
            inputs, scale = rows(grid), rows(precision)
            mean = inputs if part == "folded" else torch.bmm(inputs, heads["codeword_in"])  # folded: the map is inside
            parts.append((index, torch.bmm(torch.cat((inputs, scale * mean, -scale), -1), heads[f"{part}_weight"])))
        if len(parts) == 1:
            logits = parts[0][1]
        else:
            logits = grid.new_empty(len(grid), grid.shape[1], parts[0][1].shape[-1])
            for index, part_logits in parts:
                logits.index_copy_(0, index, part_logits)
        return logits.masked_fill(heads["invalid"][:, None], float("-inf"))

    @classmethod
    def _cell_logits(cls, out: torch.Tensor, streams: torch.Tensor, heads: dict) -> torch.Tensor:
        """Spatial outputs of cells [N, D] and their streams [N] -> logits [N, V_max] (generation: only the cells a
        round reveals). Cells are grouped by stream into one `_grid_logits` call (a handful of operators whatever the
        count)."""
        num_streams = heads["weight"].shape[0]
        order = torch.argsort(streams, stable=True)
        counts = torch.bincount(streams, minlength=num_streams)
        slot = torch.arange(len(streams), device=out.device) - (torch.cumsum(counts, 0) - counts)[streams[order]]
        grid = out.new_zeros(num_streams, int(counts.max()), out.shape[-1])
        grid[streams[order], slot] = out[order]
        logits = cls._grid_logits(grid, heads)
        result = torch.empty(len(streams), logits.shape[-1], dtype=logits.dtype, device=out.device)
        result[order] = logits[streams[order], slot]
        return result

    def _sample_cells(self, logits: torch.Tensor, temperatures: torch.Tensor, top_k, top_p, generator,
                      log_probability: bool = True):
        """logits [N, V] and each row's temperature [N] -> (codes [N], their log-probability under the tempered,
        filtered distribution, or None without `log_probability`). Inverse-CDF sampling: one uniform draw per cell
        (not one per code, as Gumbel-max takes), exact up to float rounding of the cumulative sum."""
        greedy = temperatures <= 0
        scaled = logits.float() / temperatures.clamp(min=1e-6)[:, None]
        probs = top_p_filter(top_k_filter(scaled, top_k), top_p).softmax(-1)
        cdf = probs.cumsum(-1)
        uniform = torch.rand(len(cdf), 1, generator=generator, device=generator.device if generator is not None
                             else cdf.device).to(cdf.device)
        # u * total < total: the first code whose cumulative probability exceeds it has probability > 0
        codes = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)[:, 0].clamp_(max=cdf.shape[-1] - 1)
        if bool(greedy.any()):
            codes = torch.where(greedy, scaled.argmax(-1), codes)
        return codes, probs.gather(-1, codes[:, None])[:, 0].log() if log_probability else None

    def _sample_second(self, context_and_place: torch.Tensor, settings: dict, heads: dict, generator,
                       guided: bool, pair_weights: torch.Tensor | None = None,
                       distances: torch.Tensor | None = None) -> torch.Tensor:
        """One second of every channel: context_and_place [B', C, D] (B' = 2B with guidance: conditional rows, then
        unconditional) -> offset tokens [B', C, M], decoded group by group in `num_rounds` rounds each.

        A round reveals a share of the group's hidden cells (cosine schedule): "random" picks them first and scores only
        those (the order the model was trained for); "spread" does the same in a spatially spread order (per stream,
        channels in farthest-point order from a random first one, streams interleaved at random: cells revealed
        together, which are sampled independently, are far apart); "confidence" (MaskGIT) samples every hidden cell
        and keeps the most confident draws. `distances` [B, C, C] (`_channel_distances`): needed by "spread"."""
        rows, channels = context_and_place.shape[:2]
        m, device = self.num_streams, context_and_place.device
        tokens = torch.zeros(rows, channels, m, dtype=torch.long, device=device)
        hidden = torch.ones(rows, channels, m, dtype=torch.bool, device=device)
        batch = rows // 2 if guided else rows
        offsets = self.stream_offsets(device)
        temperatures = torch.tensor(settings["stream_temperatures"], device=device)
        rand = lambda *shape: torch.rand(*shape, generator=generator, device=generator.device if generator is not None  # noqa
                                         else device).to(device)
        inputs = context_and_place + self._cell_embeddings(tokens, hidden)  # kept up to date as cells are revealed
        for group in self.config.groups:
            in_group = torch.zeros(m, dtype=torch.bool, device=device)
            in_group[group] = True
            cells = channels * len(group)
            rounds = min(settings["num_rounds"], cells)
            if settings["unmasking"] == "spread":  # each stream's channels in farthest-point order, streams interleaved
                priority = -(_spread_order(distances, m, rand).float() + rand(batch, channels, m))  # [B, C, M]
            for r in range(rounds):
                open_cells = hidden[:batch] & in_group  # [B, C, M]; every row has as many open cells
                count = int(open_cells[0].sum()) - math.floor(cells * math.cos(math.pi / 2 * (r + 1) / rounds))
                if count == 0:  # (the cosine schedule can leave a round nothing to reveal)
                    continue
                out = self._spatial(inputs, tokens, hidden, pair_weights, heads.get("codeword_table"))  # [B', C, D]
                if settings["unmasking"] != "confidence":  # reveal `count` open cells in random / spread order
                    order = rand(batch, channels, m) if settings["unmasking"] == "random" else priority
                    score = order.masked_fill(~open_cells, float("-inf"))
                    sampled = _top_cells(score.flatten(1), count).view_as(open_cells)
                else:  # confidence: sample every open cell, keep the most confident below
                    sampled = open_cells
                b, c, s = sampled.nonzero(as_tuple=True)
                if guided:
                    logits = self._cell_logits(torch.cat((out[b, c], out[b + batch, c])), s.repeat(2), heads)
                    conditional, unconditional = logits.chunk(2)
                    guided_logits = unconditional + settings["guidance_scale"] * (conditional - unconditional)
                    logits = torch.where(unconditional.isfinite(), guided_logits, float("-inf"))  # -inf past a vocabulary
                else:
                    logits = self._cell_logits(out[b, c], s, heads)
                # later rounds see more of the second: cooler draws there make cells follow the channels already known
                scale = 1 + (settings["last_round_temperature_scale"] - 1) * (r / (rounds - 1) if rounds > 1 else 0.0)
                codes, log_prob = self._sample_cells(logits, temperatures[s] * scale, settings["top_k"],
                                                     settings["top_p"], generator,
                                                     log_probability=settings["unmasking"] == "confidence")
                if settings["unmasking"] == "confidence":
                    # MaskGIT: choice noise (Gumbel x choice_temperature) annealed to pure confidence at the end
                    gumbel = -torch.log(-torch.log(rand(len(codes)).clamp(1e-9, 1 - 1e-9)))
                    noise = gumbel * settings["choice_temperature"] * (1 - (r + 1) / rounds)
                    confidence = torch.full((batch, channels * m), float("-inf"), device=device)
                    confidence[b, c * m + s] = log_prob + noise
                    keep = _top_cells(confidence, count)[b, c * m + s]
                    b, c, s, codes = b[keep], c[keep], s[keep], codes[keep]
                new = codes + offsets[s]
                if guided:
                    b, c, s, new = torch.cat((b, b + batch)), c.repeat(2), s.repeat(2), new.repeat(2)
                tokens[b, c, s] = new
                hidden[b, c, s] = False
                inputs.index_put_((b, c), self.token_embed(new) - self.mask_embed[s], accumulate=True)
        return tokens

    @torch.no_grad()
    def generate(self, channel_indices=None, num_patches: int | None = None, prompt_codes: torch.Tensor | None = None,
                 prompt_scale_codes: torch.Tensor | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True, batch_size: int | None = None, channel_names=None, stream_temperatures=None,
                 condition=None, guidance_scale: float | None = None, num_rounds: int | None = None,
                 unmasking: str | None = None, choice_temperature: float | None = None,
                 last_round_temperature_scale: float | None = None,
                 generation_config: GenerationConfig | None = None) -> dict:
        """Sample `num_patches` new seconds of every channel, continuing an optional prompt.

        Args:
            channel_indices / channel_names: channel-vocabulary indices [B, C] / [C] or names (one list, or one per
                sample), any order: the model has no privileged channel order.
            num_patches: seconds to generate, > 0.
            prompt_codes / prompt_scale_codes: optional [B, S, K, C, A'] / [B, 2, C, A'] codes kept verbatim first.
            temperature, top_k, top_p, stream_temperatures, guidance_scale, num_rounds, unmasking: override
                `generation_config` (default `self.generation_config`, the model's validated defaults). Stream m is
                sampled at temperature x `stream_temperature_scales[m]` unless `stream_temperatures` (M values) is
                given; `num_rounds` per stream group and second; `unmasking` "confidence" (MaskGIT), "random" or
                "spread" (see `_sample_second`);
                `choice_temperature`: with "confidence", the scale of the Gumbel noise on the confidences that
                picks the cells a round keeps (annealed to 0 over the rounds; default: the temperature; MaskGIT's
                is 4.5): higher = closer to a random order.
                `last_round_temperature_scale`: the temperature of a group's last round as a share of its first's
                (rounds between interpolate linearly; default 1 = every round at the temperature): < 1 samples the
                cells revealed late, which see most of their second, closer to what the revealed channels imply.
            generator: a `torch.Generator` for reproducible samples.
            use_cache: keep the main transformer's keys/values between seconds (same samples, faster).
            batch_size: B when neither the prompt nor `channel_indices` [B, C] sets it (default 1).
            condition: a name of `config.condition_names` (or one per sample), None = unconditional.

        Returns:
            dict with `codes` [B, S, K, C, A' + num_patches] and `scale_codes` [B, 2, C, A' + num_patches] (None
            without scale streams).

        The context holds W = min(max_positions // C, max_patches) seconds; past that, the window slides (time ids
        re-based, cache rebuilt from the kept seconds), so any length can be generated. It slides by one second, or,
        with `generation_config.window_shift` = s in (0, 1], by max(1, floor(s x W)) seconds at a time: fewer
        rebuilds, the context then ranging from W - shift to W - 1 seconds.
        """
        channels = channel_names if channel_indices is None else channel_indices
        if channels is None:
            raise ValueError("pass channel_indices (or channel_names)")
        if isinstance(num_patches, bool) or not isinstance(num_patches, int) or num_patches <= 0:
            raise ValueError(f"num_patches must be a positive integer, got {num_patches!r}")
        settings = self._sampling_settings(generation_config, temperature=temperature, top_k=top_k, top_p=top_p,
                                           stream_temperatures=stream_temperatures, guidance_scale=guidance_scale,
                                           num_rounds=num_rounds, unmasking=unmasking,
                                           choice_temperature=choice_temperature,
                                           last_round_temperature_scale=last_round_temperature_scale,
                                           conditional=condition is not None)
        batch = batch_size if prompt_codes is None else (prompt_codes.shape[0] if isinstance(prompt_codes, torch.Tensor)
                                                         and prompt_codes.dim() == 5 else None)
        index = self.channel_indices(channels, batch)
        batch, num_channels = index.shape
        prompt = self._check_prompt(prompt_codes, prompt_scale_codes, batch, num_channels)
        condition_ids = self._generation_conditions(condition, batch)
        guided, index, condition_ids, prompt = self._guided_batch(settings["guidance_scale"], index, condition_ids,
                                                                  prompt)
        window = min(self.config.max_positions // num_channels, self.config.max_patches)
        if window < 1:
            raise ValueError(f"{num_channels} channels do not fit in the context ({self.config.max_positions} "
                             "positions): use fewer channels or a model with a longer context")

        rows, m = index.shape[0], self.num_streams
        prompt_patches = 0 if prompt is None else prompt.shape[1] // num_channels
        total = prompt_patches + num_patches
        tokens = torch.zeros(rows, total, num_channels, m, dtype=torch.long, device=self.device)
        if prompt is not None:
            tokens[:, :prompt_patches] = (prompt + self.stream_offsets(self.device)).view(rows, prompt_patches,
                                                                                          num_channels, m)
        condition = self._condition(condition_ids, rows, self.device)
        place = self._place(index)  # [B', C, D]
        spatial_place = place + self._spatial_condition(condition_ids, rows, self.device)  # as in `forward`
        heads, pair_weights = self._stream_heads(), self._pair_weights(place)
        distances = None
        if settings["unmasking"] == "spread":
            distances = self._channel_distances(index[: index.shape[0] // 2 if guided else None])
            if distances is None:
                raise ValueError('unmasking="spread" needs electrode positions (config.electrode_positions)')
        shift = 1 if settings["window_shift"] is None else max(1, math.floor(settings["window_shift"] * window))
        start, cached, past = 0, 0, None  # `past` holds seconds [start, cached) of the window
        for a in range(prompt_patches, total):
            if a - start + 1 > window:  # slide: keep the newest window - shift seconds, rebuild the cache
                start, cached, past = a - window + shift, a - window + shift, None
            if not use_cache:
                cached, past = start, None
            if a > cached:  # the seconds not yet seen by the main transformer (the prompt, or the last one)
                steps = torch.arange(cached - start, a - start, device=self.device)
                hidden_states, past = self._context(tokens[:, cached:a], place, steps, condition, past, cached - start)
                context, cached = hidden_states[:, -1], a
            elif a == start:
                context = self._first_context(rows, num_channels, condition)
            tokens[:, a] = self._sample_second(self.context_in(context) + spatial_place, settings, heads, generator,
                                               guided, pair_weights, distances)

        positions = (tokens[:batch] - self.stream_offsets(self.device)).flatten(1, 2)  # time-major [B, A*C, M]
        codes, scale_codes = positions_to_codes(positions, num_channels, self.code_layout.num_scales,
                                                self.code_layout.num_quantizers, self.code_layout.has_scale_codes)
        return {"codes": codes, "scale_codes": scale_codes}


__all__ = ["LBMForSpatialGeneration", "LBMSpatialOutput", "LBMSpatialPreTrainedModel", "default_generation_config"]
