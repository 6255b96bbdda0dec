"""How tokenizer codes become LBM sequences, and back. Every conversion here is exact (a permutation of
integers), and this file is the only place that knows the order.

Vocabulary of the layout:

- A *position* is one (patch a, channel c) cell of a recording. Positions are ordered **time-major**,
  p = a * C + c: every channel of patch 0, then every channel of patch 1, ... so generating positions in
  order moves forward in time, and a window of whole patches is a contiguous slice.
- Each position carries M *streams*, one code each, in this order:

      [scale_mean, scale_std,]  (s0,k0) (s0,k1) ... (s0,k{K-1})  (s1,k0) ... (s{S-1},k{K-1})

  The two amplitude scale tokens come first (only when the tokenizer emits them), so that an
  autoregressive model decides a patch's amplitude before its shape; then the S x K residual codes,
  scale-major and coarse-to-fine within a scale (stage 0 is the coarsest residual).
- Stream m has its own vocabulary of `stream_vocab_sizes[m]` codes (`num_scale_tokens` for the two
  scale streams, `codebook_size` for the others). The *flattened* layout puts all streams in one
  vocabulary by shifting stream m by `offsets[m]` (cumulative sizes): token = offsets[m] + code.

Shapes: codes [B, S, K, C, A] and scale_codes [B, 2, C, A] (tokenizer) <-> positions [B, A*C, M]
<-> flat tokens [B, A*C*M].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange


@dataclass(frozen=True)
class CodeLayout:
    """The code alphabet an LBM models: S scales x K stages of `codebook_size` codes, plus (when
    `num_scale_tokens` > 0) two amplitude scale streams of `num_scale_tokens` levels each."""

    num_scales: int
    num_quantizers: int
    codebook_size: int
    num_scale_tokens: int = 0

    def __post_init__(self):
        for name in ("num_scales", "num_quantizers", "codebook_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"CodeLayout.{name} must be a positive integer, got {value!r}")
        value = self.num_scale_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1:
            raise ValueError(f"CodeLayout.num_scale_tokens must be 0 (no scale codes) or >= 2, got {value!r}")

    @classmethod
    def from_tokenizer_config(cls, cfg) -> "CodeLayout":
        """The layout of the codes a `NeuroRVQConfig` tokenizer emits (scale streams only with `scale_tokens`)."""
        scale_tokens = cfg.num_scale_tokens if cfg.amplitude_side_information == "scale_tokens" else 0
        return cls(cfg.num_scales, cfg.num_quantizers, cfg.codebook_size, scale_tokens)

    @property
    def has_scale_codes(self) -> bool:
        return self.num_scale_tokens > 0

    @property
    def num_streams(self) -> int:
        """M = S * K (+ 2 with scale codes)."""
        return self.num_scales * self.num_quantizers + (2 if self.has_scale_codes else 0)

    @property
    def stream_vocab_sizes(self) -> list[int]:
        """Codes per stream, in stream order: [T, T,] then `codebook_size` S * K times."""
        scale = [self.num_scale_tokens] * 2 if self.has_scale_codes else []
        return scale + [self.codebook_size] * (self.num_scales * self.num_quantizers)

    @property
    def stream_names(self) -> list[str]:
        """Readable stream names, in stream order ("scale_mean", "scale_std", "s0k0", "s0k1", ...)."""
        scale = ["scale_mean", "scale_std"] if self.has_scale_codes else []
        return scale + [f"s{s}k{k}" for s in range(self.num_scales) for k in range(self.num_quantizers)]

    @property
    def vocab_size(self) -> int:
        """Size of the flattened (offset) vocabulary: the sum of the stream vocabularies."""
        return sum(self.stream_vocab_sizes)

    def offsets(self) -> torch.LongTensor:
        """`stream_offsets(self.stream_vocab_sizes)`: [M]."""
        return stream_offsets(self.stream_vocab_sizes)


# ----------------------------------------------------------------------------------------------------
# codes <-> positions
# ----------------------------------------------------------------------------------------------------


def _check_integer_tensor(name: str, value, rank: int, shape_doc: str) -> None:
    if not isinstance(value, torch.Tensor) or value.dim() != rank:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a LongTensor {shape_doc}, got {got}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer codes, got {value.dtype}")


def codes_to_positions(codes: torch.Tensor, scale_codes: torch.Tensor | None = None) -> torch.LongTensor:
    """Tokenizer codes -> one row of M stream codes per (patch, channel) position.

    Args:
        codes: [B, S, K, C, A] residual codes.
        scale_codes: optional [B, 2, C, A] amplitude (mean, std) tokens; they become streams 0 and 1.

    Returns:
        positions [B, A*C, M], row p = a * C + c, M = S*K (+ 2), stream order as in the module docstring.
    """
    _check_integer_tensor("codes", codes, 5, "[B, S, K, C, A]")
    streams = rearrange(codes.long(), "b s k c a -> b (a c) (s k)")
    if scale_codes is None:
        return streams
    _check_integer_tensor("scale_codes", scale_codes, 4, "[B, 2, C, A]")
    b, _, _, c, a = codes.shape
    if tuple(scale_codes.shape) != (b, 2, c, a):
        raise ValueError(f"scale_codes must have shape {(b, 2, c, a)} to match codes, got {tuple(scale_codes.shape)}")
    scale = rearrange(scale_codes.long(), "b two c a -> b (a c) two")
    return torch.cat((scale, streams), dim=-1)


def positions_to_codes(positions: torch.Tensor, num_channels: int, num_scales: int, num_quantizers: int,
                       has_scale_codes: bool) -> tuple[torch.LongTensor, torch.LongTensor | None]:
    """Inverse of [`codes_to_positions`]: positions [B, A*C, M] -> (codes [B, S, K, C, A], scale_codes
    [B, 2, C, A] or None)."""
    _check_integer_tensor("positions", positions, 3, "[B, A*C, M]")
    b, p, m = positions.shape
    expected = num_scales * num_quantizers + (2 if has_scale_codes else 0)
    if m != expected:
        raise ValueError(f"positions have {m} streams, expected {expected} (S={num_scales} x K={num_quantizers}"
                         f"{' + 2 scale streams' if has_scale_codes else ''})")
    if num_channels <= 0 or p % num_channels:
        raise ValueError(f"positions hold {p} rows, not a whole number of patches of {num_channels} channels")
    positions = positions.long()
    scale_codes = None
    if has_scale_codes:
        scale_codes = rearrange(positions[..., :2], "b (a c) two -> b two c a", c=num_channels)
        positions = positions[..., 2:]
    codes = rearrange(positions, "b (a c) (s k) -> b s k c a", c=num_channels, s=num_scales)
    return codes, scale_codes


def channel_and_time_ids(channel_indices: torch.Tensor, num_patches: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Per-position channel and time ids for time-major positions.

    Args:
        channel_indices: [B, C] channel-vocabulary index of each channel.
        num_patches: A.

    Returns:
        (channel_ids [B, A*C], time_ids [B, A*C]): position p = a * C + c has channel_indices[:, c] and time a.
    """
    _check_integer_tensor("channel_indices", channel_indices, 2, "[B, C]")
    if num_patches <= 0:
        raise ValueError(f"num_patches must be positive, got {num_patches}")
    b, c = channel_indices.shape
    channel_ids = channel_indices.long().repeat(1, num_patches)
    time_ids = torch.arange(num_patches, device=channel_indices.device).repeat_interleave(c).expand(b, -1)
    return channel_ids, time_ids.contiguous()


# ----------------------------------------------------------------------------------------------------
# positions <-> flattened tokens
# ----------------------------------------------------------------------------------------------------


def stream_offsets(stream_vocab_sizes) -> torch.LongTensor:
    """Start of each stream in the flattened vocabulary: [0, V0, V0 + V1, ...] ([M])."""
    sizes = torch.as_tensor(list(stream_vocab_sizes), dtype=torch.long)
    if sizes.dim() != 1 or not len(sizes) or (sizes <= 0).any():
        raise ValueError(f"stream_vocab_sizes must be a non-empty list of positive sizes, got {stream_vocab_sizes!r}")
    return torch.cumsum(sizes, 0) - sizes


def positions_to_flat(positions: torch.Tensor, offsets: torch.Tensor) -> torch.LongTensor:
    """positions [B, P, M] -> flat tokens [B, P*M]: token p*M + m = offsets[m] + positions[:, p, m]."""
    _check_integer_tensor("positions", positions, 3, "[B, P, M]")
    offsets = torch.as_tensor(offsets, dtype=torch.long, device=positions.device)
    if offsets.shape != (positions.shape[-1],):
        raise ValueError(f"offsets must have one entry per stream ({positions.shape[-1]}), got {tuple(offsets.shape)}")
    return (positions.long() + offsets).flatten(1)


def flat_to_positions(tokens: torch.Tensor, offsets: torch.Tensor, num_streams: int) -> torch.LongTensor:
    """Inverse of [`positions_to_flat`]: flat tokens [B, P*M] -> positions [B, P, M].

    Raises `ValueError` when the length is not a whole number of positions or a token lies outside its
    stream's slice of the vocabulary (below its offset, or at or past the next stream's).
    """
    _check_integer_tensor("tokens", tokens, 2, "[B, P*M]")
    offsets = torch.as_tensor(offsets, dtype=torch.long, device=tokens.device)
    if offsets.shape != (num_streams,):
        raise ValueError(f"offsets must have {num_streams} entries, got {tuple(offsets.shape)}")
    if tokens.shape[1] % num_streams:
        raise ValueError(f"{tokens.shape[1]} tokens are not a whole number of positions of {num_streams} streams")
    positions = tokens.long().reshape(tokens.shape[0], -1, num_streams) - offsets
    widths = offsets[1:] - offsets[:-1]
    if positions.numel() and ((positions < 0).any() or (positions[..., :-1] >= widths).any()):
        raise ValueError("a token lies outside its stream's slice of the flattened vocabulary")
    return positions
