"""Configuration of the spatial LBM: one second of every channel generated together (see `modeling_lbm_spatial.py`)."""

from __future__ import annotations

from .configuration_lbm import LBMConfig


class LBMSpatialConfig(LBMConfig):
    r"""Configuration of an [`LBMForSpatialGeneration`].

    It shares [`LBMConfig`]'s code alphabet (`num_scales`, `num_quantizers`, `codebook_size`, `num_scale_tokens`),
    channel vocabulary, main transformer (`hidden_size`, `num_layers`, `num_heads`, `mlp_ratio`, `dropout`),
    context (`max_positions` positions = channel-seconds, `max_patches`), codeword scores (`codeword_dims`,
    `codeword_logits`), conditions and initialisation; the depth-transformer fields, `depth_neighbours`,
    `spatial_context` and `stream_temperature_scales` are not used (sampling defaults live in the model's
    `generation_config`). Its own fields:

    Args:
        spatial_layers (`int`): layers of the spatial transformer, which attends across the channels of one second
            (bidirectional) and predicts their masked codes. Width and heads: `hidden_size`, `num_heads`.
        stream_groups (`list[list[int]]`, *optional*): streams (layout order) decoded together, group after group;
            within a group, any subset of the second's cells (channel x stream) may be known when the rest are
            predicted. None = one group of all M streams (every cell of the second in any order).
        codeword_context (`bool`): with `codeword_logits`: the spatial transformer's input for channel c also carries,
            per head (`spatial_heads`), a weighted mean over the other channels of their known codewords (each stream's
            slice side by side, 0 where hidden) and of which of their cells are known, with weights that depend on
            the channel pair only (queries and keys from the channel embeddings). Real channels share much of their
            waveform: this hands each channel the shared part in codeword space, which summed code embeddings hide.
        codeword_context_normalization (`str`): how `codeword_context` averages: `"known"` = per stream, over the
            other channels whose cell of that stream is known (the mean known codeword, whatever share of the second
            is known yet); `"all"` = over all other channels, hidden ones counting as 0 (the first bundled spatial
            model; the network must then divide by the known share itself).
        electrode_positions (`bool`): add an embedding of each channel's 3-D electrode position (MNE's standard 10-05
            montage) to its learned channel embedding, so that neighbouring electrodes start alike and share what
            they learn; channels without a standard position get the channel embedding alone.
        spatial_condition (`bool`): also add a condition embedding of its own (zero at initialisation, so a model
            fine-tuned from one without it starts equal to it) to every channel's spatial-transformer input, beside
            the one the main transformer gets: the network that predicts the codes then sees the state directly,
            not only through the main transformer's context.
    """

    model_type = "neurorvq-lbm-spatial"
    layouts = ("spatial",)

    def __init__(self, spatial_layers: int = 2, stream_groups: list[list[int]] | None = None,
                 electrode_positions: bool = True, codeword_context: bool = False,
                 codeword_context_normalization: str = "all", spatial_condition: bool = False, **kwargs):
        self.spatial_condition = spatial_condition
        self.spatial_layers = spatial_layers
        self.codeword_context = codeword_context
        self.codeword_context_normalization = codeword_context_normalization
        self.stream_groups = None if stream_groups is None else [[int(m) for m in group] for group in stream_groups]
        self.electrode_positions = electrode_positions
        kwargs.setdefault("layout", "spatial")
        kwargs.setdefault("depth_neighbours", False)
        super().__init__(**kwargs)

    @classmethod
    def from_tokenizer_config(cls, tokenizer_config, **kwargs) -> "LBMSpatialConfig":
        """A config whose code layout and channel vocabulary match a `NeuroRVQConfig`, with codeword scores for an mdct
        tokenizer; `kwargs` set the rest."""
        kwargs.setdefault("layout", "spatial")
        kwargs.setdefault("depth_neighbours", False)
        config = super().from_tokenizer_config(tokenizer_config, **kwargs)
        if getattr(tokenizer_config, "scales_are_frequency_bands", False) and "codeword_logits" not in kwargs:
            config.codeword_dims, config.codeword_logits = list(tokenizer_config.band_widths), True
            config.codeword_context = kwargs.get("codeword_context", True)
        config.spatial_context = False
        config.validate()
        return config

    @property
    def groups(self) -> list[list[int]]:
        """`stream_groups`, or one group of every stream."""
        return self.stream_groups or [list(range(self.num_streams))]

    def validate(self) -> None:
        super().validate()
        if isinstance(self.spatial_layers, bool) or not isinstance(self.spatial_layers, int) or self.spatial_layers <= 0:
            raise ValueError(f"LBMSpatialConfig.spatial_layers must be a positive integer, got {self.spatial_layers!r}")
        if self.spatial_context or self.depth_neighbours:
            raise ValueError("LBMSpatialConfig: spatial_context and depth_neighbours belong to the depth-wise layout")
        if self.stream_groups is not None:
            flat = sorted(m for group in self.stream_groups for m in group)
            if not all(self.stream_groups) or flat != list(range(self.num_streams)):
                raise ValueError(f"LBMSpatialConfig.stream_groups must split the {self.num_streams} streams "
                                 f"(0..{self.num_streams - 1}) into non-empty groups, each stream once, got "
                                 f"{self.stream_groups!r}")
        if self.codeword_context is not False and (self.codeword_context is not True or not self.codeword_logits):
            raise ValueError("LBMSpatialConfig.codeword_context must be True or False and needs codeword_logits")
        if self.codeword_context_normalization not in ("all", "known"):
            raise ValueError("LBMSpatialConfig.codeword_context_normalization must be 'all' or 'known', got "
                             f"{self.codeword_context_normalization!r}")
        if not isinstance(self.spatial_condition, bool):
            raise ValueError(f"LBMSpatialConfig.spatial_condition must be True or False, got {self.spatial_condition!r}")
        if not isinstance(self.electrode_positions, bool):
            raise ValueError(f"LBMSpatialConfig.electrode_positions must be True or False, got {self.electrode_positions!r}")
