"""Configuration of the NeuroRVQ large brainwave model (LBM): a decoder-only transformer over tokenizer codes."""

from __future__ import annotations

import math

from transformers import PretrainedConfig

from neurorvq.tokenizer.channels import CHANNEL_VOCABULARY

from .layout import CodeLayout

LAYOUTS = ("flattened", "depthwise")


class LBMConfig(PretrainedConfig):
    r"""Configuration of an [`LBMForCausalLM`].

    Args:
        layout (`str`): how the M streams of a position are sequenced.
            `"flattened"`: one main-transformer step per (position, stream) token, over one offset vocabulary.
            `"depthwise"` (RQ-Transformer / CSM style): one main step per position; a small depth
            transformer predicts the position's M codes in stream order from the main hidden state.
        num_scales (`int`), num_quantizers (`int`), codebook_size (`int`): the tokenizer's S, K and codes per
            stage.
        num_scale_tokens (`int`): levels of the two amplitude scale streams (tokenizer
            `amplitude_side_information="scale_tokens"`); 0 = the codes carry no scale streams.
        channel_vocabulary (`list[str]`): channel names; channel id i = `channel_vocabulary[i]` (the
            tokenizer's vocabulary by default), so `generate` accepts names.
        channel_vocab_size (`int`): rows of the channel embedding (>= len(channel_vocabulary); default: its length, 104).
        hidden_size (`int`), num_layers (`int`), num_heads (`int`): main transformer width, depth, heads.
        mlp_ratio (`float`): MLP width / model width (main and depth transformers).
        dropout (`float`): dropout on attention weights and residual branches (training only).
        max_positions (`int`): context length in main-transformer steps: positions for `depthwise`,
            tokens (positions x M) for `flattened`. Longer generations slide the window by whole patches.
        max_patches (`int`): rows of the time embedding; time ids (patch index relative to the start of the
            context window) must be < max_patches.
        depth_hidden_size (`int`), depth_layers (`int`), depth_heads (`int`): the depth transformer (`depthwise` only).
        depth_neighbours (`bool`): `depthwise` only: the depth step that predicts stream m of position (a, c) also
            reads stream m's codes at the previous channel (a, c - 1) and one second earlier (a - 1, c), each through
            its own linear map of the code embedding. The main transformer sees earlier positions only as sums of
            their M stream embeddings; these direct inputs hand each stream its own nearest context. Off by default
            so that configs saved before it existed load as they were; the shipped configs and
            `from_tokenizer_config` turn it on.
        codeword_dims (`list[int]`, *optional*): dimension of each scale's codewords in the tokenizer (an mdct
            tokenizer's `band_widths`). With `codeword_logits`, the model holds a copy of the tokenizer's codebooks.
        codeword_logits (`bool`): `depthwise` only: add a Gaussian score in codeword space to each code's logit,
            -precision / 2 * ||codeword - predicted mean||^2 (mean and precision predicted per stream; scale streams
            use their level on [-1, 1] as a 1-d codeword). Codes near the predicted value then share probability,
            which plain logits over 512 unrelated symbols do not: needed for channels whose band codes agree as
            much as real EEG's do. Requires `codeword_dims`; `init_code_embeddings` copies the codebooks.
        spatial_context (`bool`): with `codeword_logits`: the depth step of stream m at (a, c) also reads an
            attention-weighted mean of stream m's codewords over the channels before c in second a, with weights that
            depend on the two channels only (`spatial_heads` heads; uniform at the start). Real EEG channels share
            much of their waveform (volume conduction, common reference): this hands each stream a direct estimate of
            the shared part so far, which sums of 18 embeddings in the main transformer do not.
        spatial_heads (`int`): heads of that channel-to-channel attention.
        condition_names (`list[str]`, *optional*): the conditions (brain states) the model knows, e.g.
            `["arithmetic", "eyes_closed", "eyes_open", "rest"]`; condition id i + 1 = `condition_names[i]`, id 0 =
            unconditional. None or [] = no conditions. `train_lbm` fills it from the training labels when None.
        condition_dropout (`float`): share of training windows whose condition is replaced by the unconditional id
            (so that unconditional sampling and classifier-free guidance work).
        stream_temperature_scales (`list[float]`, *optional*): per-stream multipliers of the sampling temperature
            (M values, layout order): `generate(temperature=t)` samples stream m at t x scale m. A trained model's
            own setting, chosen by measuring its samples against real EEG (like a generation config's defaults):
            e.g. colder gain streams keep each channel's amplitude steady. None = 1 for every stream.
        layer_norm_eps (`float`): LayerNorm epsilon.
        initializer_range (`float`): std of the normal initialisation (residual projections are scaled down
            by sqrt(2 * layers), GPT-2 style).
        tokenizer_name_or_path (`str`, *optional*): the tokenizer whose codes this model was trained on.
    """

    model_type = "neurorvq-lbm"
    layouts = LAYOUTS  # a subclass modelling another layout names its own

    def __init__(
        self,
        layout: str = "depthwise",
        num_scales: int = 4,
        num_quantizers: int = 8,
        codebook_size: int = 8192,
        num_scale_tokens: int = 256,
        channel_vocabulary: list[str] | None = None,
        channel_vocab_size: int | None = None,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        max_positions: int = 304,
        max_patches: int = 64,
        depth_hidden_size: int = 128,
        depth_layers: int = 2,
        depth_heads: int = 4,
        depth_neighbours: bool = False,
        codeword_dims: list[int] | None = None,
        codeword_logits: bool = False,
        spatial_context: bool = False,
        spatial_heads: int = 2,
        condition_names: list[str] | None = None,
        condition_dropout: float = 0.1,
        stream_temperature_scales: list[float] | None = None,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        tokenizer_name_or_path: str | None = None,
        **kwargs,
    ):
        self.layout = layout
        self.num_scales = num_scales
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.num_scale_tokens = num_scale_tokens
        self.channel_vocabulary = list(channel_vocabulary if channel_vocabulary is not None else CHANNEL_VOCABULARY)
        self.channel_vocab_size = len(self.channel_vocabulary) if channel_vocab_size is None else channel_vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout
        self.max_positions = max_positions
        self.max_patches = max_patches
        self.depth_hidden_size = depth_hidden_size
        self.depth_layers = depth_layers
        self.depth_heads = depth_heads
        self.depth_neighbours = depth_neighbours
        self.codeword_dims = None if codeword_dims is None else [int(d) for d in codeword_dims]
        self.codeword_logits = codeword_logits
        self.spatial_context = spatial_context
        self.spatial_heads = spatial_heads
        self.condition_names = None if condition_names is None else list(condition_names)
        self.condition_dropout = condition_dropout
        self.stream_temperature_scales = (None if stream_temperature_scales is None
                                          else [float(v) for v in stream_temperature_scales])
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.tokenizer_name_or_path = tokenizer_name_or_path
        super().__init__(**kwargs)
        self.validate()

    @classmethod
    def from_tokenizer_config(cls, tokenizer_config, **kwargs) -> "LBMConfig":
        """An LBM config whose code layout and channel vocabulary match a `NeuroRVQConfig`; `kwargs` set the rest.

        Scale streams are modelled only when the tokenizer uses `amplitude_side_information="scale_tokens"`. For an mdct
        tokenizer and the depth-wise layout, codeword scores and the spatial context are on (`codeword_logits`,
        `spatial_context`); `init_code_embeddings(tokenizer)` then copies its codebooks.
        """
        layout = CodeLayout.from_tokenizer_config(tokenizer_config)
        defaults = dict(
            num_scales=layout.num_scales,
            num_quantizers=layout.num_quantizers,
            codebook_size=layout.codebook_size,
            num_scale_tokens=layout.num_scale_tokens,
            channel_vocabulary=list(tokenizer_config.channel_vocabulary),
            tokenizer_name_or_path=getattr(tokenizer_config, "_name_or_path", None) or None,
            depth_neighbours=True,
        )
        if getattr(tokenizer_config, "scales_are_frequency_bands", False) and kwargs.get("layout", "depthwise") == "depthwise":
            defaults.update(codeword_dims=list(tokenizer_config.band_widths), codeword_logits=True, spatial_context=True)
        defaults.update(kwargs)
        return cls(**defaults)

    @property
    def code_layout(self) -> CodeLayout:
        return CodeLayout(self.num_scales, self.num_quantizers, self.codebook_size, self.num_scale_tokens)

    @property
    def num_streams(self) -> int:
        return self.code_layout.num_streams

    @property
    def num_conditions(self) -> int:
        """Known conditions (the unconditional id 0 not counted)."""
        return len(self.condition_names or [])

    def condition_id(self, condition) -> int:
        """A condition name (or None = unconditional) -> its id; `ValueError` listing the known names otherwise."""
        if condition is None:
            return 0
        names = self.condition_names or []
        if not isinstance(condition, str) or condition not in names:
            known = ", ".join(names) if names else "none: this model was trained without conditions"
            raise ValueError(f"unknown condition {condition!r}; the model knows: {known}")
        return names.index(condition) + 1

    def stream_temperatures(self, temperature: float | list[float]) -> list[float]:
        """The M per-stream sampling temperatures for `temperature` (one for every stream, or M of them): times
        `stream_temperature_scales` if set."""
        if isinstance(temperature, (int, float)):
            temperature = [temperature] * self.num_streams
        return [t * scale for t, scale in zip(temperature, self.stream_temperature_scales or [1.0] * self.num_streams)]

    @property
    def positions_per_context(self) -> int:
        """Whole positions that fit in the context (`max_positions` // M for `flattened`)."""
        return self.max_positions // self.num_streams if self.layout == "flattened" else self.max_positions

    def validate(self) -> None:
        """Raise `ValueError` naming the first invalid field."""

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LBMConfig.{name} must be a positive integer, got {value!r}")

        if self.layout not in self.layouts:
            raise ValueError(f"{type(self).__name__}.layout must be one of {self.layouts}, got {self.layout!r}")
        for name in ("num_scales", "num_quantizers", "codebook_size", "channel_vocab_size", "hidden_size",
                     "num_layers", "num_heads", "max_positions", "max_patches", "depth_hidden_size",
                     "depth_layers", "depth_heads"):
            positive_int(name)
        value = self.num_scale_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1:
            raise ValueError(f"LBMConfig.num_scale_tokens must be 0 (no scale streams) or >= 2, got {value!r}")
        for name in ("mlp_ratio", "layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"LBMConfig.{name} must be > 0, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"LBMConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"LBMConfig.num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.depth_hidden_size % self.depth_heads:
            raise ValueError(f"LBMConfig.depth_heads ({self.depth_heads}) must divide depth_hidden_size "
                             f"({self.depth_hidden_size})")
        vocabulary = self.channel_vocabulary
        if not vocabulary or any(not isinstance(n, str) or not n or n != n.lower() for n in vocabulary):
            raise ValueError("LBMConfig.channel_vocabulary must be a non-empty list of lower-case names")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("LBMConfig.channel_vocabulary has duplicate names")
        if self.channel_vocab_size < len(vocabulary):
            raise ValueError(f"LBMConfig.channel_vocab_size ({self.channel_vocab_size}) must be >= "
                             f"len(channel_vocabulary) ({len(vocabulary)})")
        if self.layout == "flattened" and self.max_positions < self.num_streams:
            raise ValueError(f"LBMConfig.max_positions ({self.max_positions}) counts tokens in the flattened layout "
                             f"and must hold at least one position ({self.num_streams} streams)")
        if self.codeword_dims is not None and (len(self.codeword_dims) != self.num_scales
                                               or any(d <= 0 for d in self.codeword_dims)):
            raise ValueError(f"LBMConfig.codeword_dims must give one positive dimension per scale ({self.num_scales}), "
                             f"got {self.codeword_dims!r}")
        if self.codeword_logits and (self.layout == "flattened" or self.codeword_dims is None):
            raise ValueError(f"{type(self).__name__}.codeword_logits needs a layout with stream heads (not flattened) "
                             "and codeword_dims")
        if self.spatial_context and not self.codeword_logits:
            raise ValueError("LBMConfig.spatial_context reads codewords: it needs codeword_logits")
        if isinstance(self.spatial_heads, bool) or not isinstance(self.spatial_heads, int) or self.spatial_heads <= 0:
            raise ValueError(f"LBMConfig.spatial_heads must be a positive integer, got {self.spatial_heads!r}")
        names = self.condition_names
        if names is not None and (any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names)):
            raise ValueError(f"LBMConfig.condition_names must be distinct non-empty strings, got {names!r}")
        if isinstance(self.condition_dropout, bool) or not isinstance(self.condition_dropout, (int, float)) \
                or not 0 <= self.condition_dropout < 1:
            raise ValueError(f"LBMConfig.condition_dropout must be in [0, 1), got {self.condition_dropout!r}")
        scales = self.stream_temperature_scales
        if scales is not None and (len(scales) != self.num_streams or not all(math.isfinite(v) and v > 0 for v in scales)):
            raise ValueError(f"LBMConfig.stream_temperature_scales must be {self.num_streams} finite numbers > 0 (one per "
                             f"stream: {', '.join(self.code_layout.stream_names)}), got {scales!r}")
        if self.tokenizer_name_or_path is not None and not isinstance(self.tokenizer_name_or_path, str):
            raise ValueError(f"LBMConfig.tokenizer_name_or_path must be a string or None, "
                             f"got {self.tokenizer_name_or_path!r}")
