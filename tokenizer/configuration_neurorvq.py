"""Configuration of the NeuroRVQ EEG tokenizer.

`NeuroRVQConfig` takes the fields every token design reads; each design's own fields are declared, documented and
validated in its module (`design_released.ReleasedConfig`, `design_mdct.MdctConfig`) and become plain attributes
of the config too, whatever its design, so that every config.json keeps the fields it always had.
"""

from __future__ import annotations

import dataclasses
import math

from transformers import PretrainedConfig

from .channels import CHANNEL_VOCABULARY
from .checks import check_config_fields
from .design_mdct import MdctDesign
from .design_released import ReleasedDesign

# The input of the released model, and the default of every config: 200 Hz, one-second patches of 200 samples.
# Code that has a config (or a model) takes `config.sampling_rate` / `config.patch_size`; these constants are for
# code without one (evaluation helpers, plots of decoded EEG), and are the one place the numbers are written.
SAMPLING_RATE = 200  # Hz
PATCH_SIZE = 200  # samples per patch (one second at SAMPLING_RATE)

TOKEN_DESIGNS = {"released": ReleasedDesign, "mdct": MdctDesign}  # token_design -> the module that implements it
QUANTIZER_TYPES = ("official", "standard")
AMPLITUDE_SIDE_INFORMATION = ("window_statistics", "scale_tokens")


class NeuroRVQConfig(PretrainedConfig):
    r"""Configuration of a [`NeuroRVQTokenizer`].

    The defaults are the released EEG v1 sizes (`configs/tokenizer/official-eeg-v1.json`). The arguments below are
    the fields both designs read; each design's own fields are keyword arguments too, documented with the design:
    [`~design_released.ReleasedConfig`] (the convolution, transformers and losses of the released model) and
    [`~design_mdct.MdctConfig`] (bands, gains, refiner and noise filling of the mdct design).

    Args:
        token_design (`str`): `"released"` (the paper's model: multi-scale convolution + transformer encoder,
            one residual quantizer per scale, a transformer decoder predicting each patch's FFT log-amplitude
            and phase; `design_released.py`) or `"mdct"` (a lapped-transform codec: every channel's patches are
            MDCT frames with 50% overlap, each "scale" is a frequency band of the MDCT coefficients, normalised by
            two per-patch gains carried by the scale tokens and coded by its own residual quantizer whose codebooks
            are fitted by k-means; decoding overlap-adds the frames, so patches have no seams; `design_mdct.py`).
        sampling_rate (`int`): samples per second of the model's input (Hz).
        patch_size (`int`): samples per patch (one token position = one channel x one patch).
        max_patches (`int`): most token positions in a window (channels x patches); also the number of
            rows of the temporal embedding (released) or of the refiner's patch embedding (mdct).
        channel_vocabulary (`list[str]`): lower-case channel names; position i selects spatial
            embedding row i (row 0 is shared with the CLS token, as released).
        codebook_size (`int`): codes per quantizer stage (`n_code`).
        num_quantizers (`int`): residual stages per scale.
        quantizer_type (`str`): `"official"` (every stage L2-normalises its residual, as released) or
            `"standard"` (plain residual VQ on un-normalised residuals; the mdct design's).
        amplitude_side_information (`str`): how decoding recovers absolute amplitude.
            `"window_statistics"` (as released): the FFT log-amplitude is z-scored per window and the window's
            mean and std (two floats) must be passed to `decode`. `"scale_tokens"`: two amplitude values per patch
            (channel x second) are quantised into `num_scale_tokens` uniform levels: `scale_codes` [B, 2, C, A], so
            codes alone decode to microvolts (released: the log-amplitude mean and std; mdct: two log gains).
        num_scale_tokens (`int`): levels of the scale-token grid.
        ema_decay (`float`): EMA decay of the codebooks.
        dead_code_threshold (`float`): in training, a code whose EMA assignment count falls below this is
            restarted from a random vector of the current batch (0 disables it, as released).
        kmeans_iters (`int`): k-means iterations of the codebook initialisation (released: on the first batch;
            mdct: of the codebook fit).
        commitment_weight (`float`), codebook_weight (`float`): per-stage quantizer loss weights.
        time_loss_weight (`float`): weight of the z-scored time-domain MSE (the paper's metric) in the loss.
        initializer_range (`float`): std of the truncated-normal initialisation.
    """

    model_type = "neurorvq"

    def __init__(
        self,
        token_design: str = "released",
        sampling_rate: int = SAMPLING_RATE,
        patch_size: int = PATCH_SIZE,
        max_patches: int = 256,
        channel_vocabulary: list[str] | None = None,
        codebook_size: int = 8192,
        num_quantizers: int = 8,
        quantizer_type: str = "official",
        amplitude_side_information: str = "window_statistics",
        num_scale_tokens: int = 256,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.0,
        kmeans_iters: int = 10,
        commitment_weight: float = 1.0,
        codebook_weight: float = 0.4,
        time_loss_weight: float = 1.0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.token_design = token_design
        self.sampling_rate = sampling_rate
        self.patch_size = patch_size
        self.max_patches = max_patches
        self.channel_vocabulary = list(channel_vocabulary if channel_vocabulary is not None else CHANNEL_VOCABULARY)
        self.codebook_size = codebook_size
        self.num_quantizers = num_quantizers
        self.quantizer_type = quantizer_type
        self.amplitude_side_information = amplitude_side_information
        self.num_scale_tokens = num_scale_tokens
        self.ema_decay = ema_decay
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_iters = kmeans_iters
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.time_loss_weight = time_loss_weight
        self.initializer_range = initializer_range
        # every design's own fields, whichever design this is (config.json keeps them all): the given values, else
        # the design's defaults
        for design in TOKEN_DESIGNS.values():
            names = [field.name for field in dataclasses.fields(design.config_fields)]
            values = design.config_fields(**{name: kwargs.pop(name) for name in names if name in kwargs})
            for name in names:
                setattr(self, name, getattr(values, name))
        super().__init__(**kwargs)
        self.validate()

    # ---- what the design implies (asked by the tokenizer, the pipelines and the LBM) -----------------------

    @property
    def design_class(self) -> type:
        """The module class that implements `token_design` (`ReleasedDesign` or `MdctDesign`)."""
        return TOKEN_DESIGNS[self.token_design]

    @property
    def num_scales(self) -> int:
        """Number of scales S: one conv branch, one quantizer and one decoder input per scale (`released`),
        or one frequency band and its quantizer (`mdct`)."""
        return self.design_class.num_scales(self)

    @property
    def band_widths(self) -> list[int]:
        """`mdct`: coefficients per band (the code dimension of each band's quantizer)."""
        return [high - low for low, high in zip(self.band_edges[:-1], self.band_edges[1:])]

    @property
    def scales_are_frequency_bands(self) -> bool:
        """True when each scale is a frequency band whose codewords are the band's (gain-normalised) MDCT
        coefficients, `band_widths[s]` numbers fitted on EEG (mdct): codes near in codeword space are near in
        signal. False: codewords are learned latent vectors (released)."""
        return self.design_class.scales_are_frequency_bands

    @property
    def slow_scales(self) -> list[bool]:
        """Per scale: True when it carries only slow waves (an mdct band below `gain_split`); all False for the
        released design, whose scales each see the whole spectrum."""
        return self.design_class.slow_scales(self)

    @property
    def encodes_whole_recordings(self) -> bool:
        """True when a recording must be encoded in one call rather than window by window (mdct: every frame
        reaches half a patch into its neighbours, so windows encoded apart would each start and end with edge
        frames). The codes of an encoding's last patch then describe a frame windowed to the signal's end, which a
        continuation of the signal would not match."""
        return self.design_class.lapped_frames

    @property
    def decodes_whole_recordings(self) -> bool:
        """True when codes decode as one signal in one call, whatever their length (mdct: lapped frames cross-fade
        into their neighbours, so a prompt and its continuation decode together, without a seam; the tokenizer
        windows its refiner itself). False: decode windows of at most `max_window_tokens` tokens."""
        return self.design_class.lapped_frames

    @property
    def max_window_tokens(self) -> int | None:
        """Most tokens (channels x patches) one `encode` / `decode` call takes: `max_patches` (released: the rows
        of the temporal embedding), or None (mdct: any length)."""
        return self.max_patches if self.design_class.bounded_windows else None

    @property
    def supports_noise_filling(self) -> bool:
        """True when `decode(noise_filling=True)` adds the detail the codes did not keep (an mdct tokenizer with
        fitted `noise_filling_levels`); otherwise the option is ignored."""
        return self.noise_filling_levels is not None

    # ---- checks and rates ---------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise `ValueError` naming the first invalid field: the shared fields here, then the design's own
        (`design_released.validate_config` or `design_mdct.validate_config`)."""
        check_config_fields(
            self,
            positive_ints=("sampling_rate", "patch_size", "max_patches", "codebook_size", "num_quantizers",
                           "kmeans_iters", "num_scale_tokens"),
            positive=("initializer_range",),
            non_negative=("commitment_weight", "codebook_weight", "time_loss_weight", "dead_code_threshold"),
        )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"NeuroRVQConfig.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.amplitude_side_information not in AMPLITUDE_SIDE_INFORMATION:
            raise ValueError(f"NeuroRVQConfig.amplitude_side_information must be one of {AMPLITUDE_SIDE_INFORMATION}, "
                             f"got {self.amplitude_side_information!r}")
        if self.num_scale_tokens < 2:
            raise ValueError(f"NeuroRVQConfig.num_scale_tokens must be >= 2, got {self.num_scale_tokens!r}")
        if self.quantizer_type not in QUANTIZER_TYPES:
            raise ValueError(f"NeuroRVQConfig.quantizer_type must be one of {QUANTIZER_TYPES}, got {self.quantizer_type!r}")
        vocabulary = self.channel_vocabulary
        if not vocabulary or any(not isinstance(n, str) or n != n.lower() or not n for n in vocabulary):
            raise ValueError("NeuroRVQConfig.channel_vocabulary must be a non-empty list of lower-case names")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("NeuroRVQConfig.channel_vocabulary has duplicate names")
        if self.token_design not in TOKEN_DESIGNS:
            raise ValueError(f"NeuroRVQConfig.token_design must be one of {tuple(TOKEN_DESIGNS)}, "
                             f"got {self.token_design!r}")
        self.design_class.validate_config(self)

    def bits_per_channel_second(self, num_quantizers: int | None = None, num_channels: int = 1,
                                num_patches: int = 1) -> float:
        """Bits spent per channel-second: S x K' codes of log2(codebook_size) bits, plus side information
        (scale tokens: 2 x log2(num_scale_tokens) per patch; window statistics: two float32 per window)."""
        k = num_quantizers or self.num_quantizers
        bits = self.num_scales * k * math.log2(self.codebook_size) * self.sampling_rate / self.patch_size
        if self.amplitude_side_information == "scale_tokens":
            return bits + 2 * math.log2(self.num_scale_tokens) * self.sampling_rate / self.patch_size
        return bits + 64.0 / (num_channels * num_patches * self.patch_size / self.sampling_rate)
