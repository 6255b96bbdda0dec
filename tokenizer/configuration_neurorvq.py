"""Configuration of the NeuroRVQ EEG tokenizer."""

from __future__ import annotations

import math

from transformers import PretrainedConfig

from .channels import CHANNEL_VOCABULARY

TOKEN_DESIGNS = ("released", "mdct")
QUANTIZER_TYPES = ("official", "standard")
AMPLITUDE_SIDE_INFORMATION = ("window_statistics", "scale_tokens")


class NeuroRVQConfig(PretrainedConfig):
    r"""Configuration of a [`NeuroRVQTokenizer`].

    The defaults are the released EEG v1 sizes (`configs/tokenizer/official-eeg-v1.json`).

    Args:
        token_design (`str`): `"released"` (the paper's model: multi-scale convolution + transformer encoder,
            one residual quantizer per scale, a transformer decoder predicting each patch's FFT log-amplitude
            and phase) or `"mdct"` (a lapped-transform codec: every channel's patches are MDCT frames with 50%
            overlap, each "scale" is a frequency band of the MDCT coefficients, normalised by two per-patch
            gains carried by the scale tokens and coded by its own residual quantizer whose codebooks are
            fitted by k-means; decoding overlap-adds the frames, so patches have no seams).
        sampling_rate (`int`): samples per second of the model's input (Hz).
        patch_size (`int`): samples per patch (one token position = one channel x one patch).
        max_patches (`int`): most token positions in a window (channels x patches); also the number of
            rows of the temporal embedding.
        channel_vocabulary (`list[str]`): lower-case channel names; position i selects spatial
            embedding row i (row 0 is shared with the CLS token, as released).
        conv_channels (`int`): feature maps of every temporal-convolution branch.
        conv_kernel_sizes (`list[list[int]]`): per scale, the kernel sizes of its two conv stages.
            The number of branches is the number of scales.
        conv_pool_sizes (`list[int]`): average-pool size after each conv stage.
        conv_groups (`int`): GroupNorm groups in the conv branches.
        hidden_size (`int`): transformer width; must equal
            `patch_size / prod(conv_pool_sizes) * conv_channels`.
        num_attention_heads (`int`): heads of every attention layer.
        mlp_ratio (`float`): MLP width / hidden_size.
        encoder_layers (`int`), decoder_layers (`int`): depths of the shared encoder/decoder transformers.
        codebook_size (`int`): codes per quantizer stage (`n_code`).
        code_dim (`int`): dimension of the code space.
        num_quantizers (`int`): residual stages per scale.
        quantizer_type (`str`): `"official"` (every stage L2-normalises its residual, as released) or
            `"standard"` (plain residual VQ on un-normalised residuals).
        amplitude_side_information (`str`): how decoding recovers absolute amplitude.
            `"window_statistics"` (as released): the FFT log-amplitude is z-scored per window and the window's
            mean and std (two floats) must be passed to `decode`. `"scale_tokens"`: it is z-scored per patch
            (channel x second) and the patch's mean and std are quantised into `num_scale_tokens` uniform
            levels over `scale_mean_range` / `scale_std_range`: `scale_codes` [B, 2, C, A], so codes alone
            decode to microvolts.
        num_scale_tokens (`int`), scale_mean_range, scale_std_range (`list[float]`): the scale-token grid.
        ema_decay (`float`): EMA decay of the codebooks.
        dead_code_threshold (`float`): in training, a code whose EMA assignment count falls below this is
            restarted from a random vector of the current batch (0 disables it, as released).
        kmeans_iters (`int`): k-means iterations of the first-batch codebook initialisation.
        commitment_weight (`float`), codebook_weight (`float`): per-stage quantizer loss weights.
        quantizer_loss_weight, amplitude_loss_weight, phase_loss_weight, time_loss_weight (`float`):
            weights of the four loss terms.
        difference_loss_weight (`float`): `mdct` only: weight of the squared error of the sample-to-sample steps of
            the z-scored reconstruction (0 = off). It weights errors by frequency, high ones most; a lapped
            transform leaves the aliasing of coarse codes folded at the patch edges as high-frequency error, so this
            term trains the refiner against seams.
        phase_norm_weight (`float`): weight of the (sin^2 + cos^2 - 1)^2 penalty in the phase loss.
        layer_norm_eps (`float`), qk_norm_eps (`float`): LayerNorm epsilons (blocks/heads, per-head q/k).
        initializer_range (`float`): std of the truncated-normal initialisation.
        band_edges (`list[int]`): `mdct` only: MDCT coefficient indices bounding the S bands (S + 1 increasing
            numbers from 0 to patch_size; coefficient k is at (k + 1/2) * sampling_rate / (2 * patch_size) Hz).
        gain_split (`int`): `mdct` only: coefficients below it are scaled by the first gain token (slow
            rhythms), the rest by the second.
        log_gain_range (`list[float]`): `mdct` only: the uniform grid of the gain tokens over the natural log
            of the RMS coefficient (microvolts).
        refiner_layers (`int`): `mdct` only: layers of the joint decoder, a transformer over every (channel,
            patch) of a window that corrects the dequantised MDCT frames from what the other channels and
            seconds carry (0 = none: decoding is the codebook lookup alone).
        refiner_hidden_size (`int`), refiner_heads (`int`): its width and heads.
        noise_filling_levels (`list[float]`, *optional*): `mdct` only: per MDCT coefficient (patch_size values),
            the mean squared error that decoding leaves on it, relative to the mean decoded power of its band
            (gain-normalised units), fitted on training EEG by `codebook_fitting.fit_noise_filling`. Coarse codes
            keep little of the fast bands' energy; `decode(noise_filling=True)` adds Gaussian noise of these levels
            so decoded EEG has real band powers and spectral slope (at a higher squared error). None = not fitted.
    """

    model_type = "neurorvq"

    def __init__(
        self,
        token_design: str = "released",
        sampling_rate: int = 200,
        patch_size: int = 200,
        max_patches: int = 256,
        channel_vocabulary: list[str] | None = None,
        conv_channels: int = 8,
        conv_kernel_sizes: list[list[int]] | None = None,
        conv_pool_sizes: list[int] | None = None,
        conv_groups: int = 4,
        hidden_size: int = 200,
        num_attention_heads: int = 10,
        mlp_ratio: float = 4.0,
        encoder_layers: int = 12,
        decoder_layers: int = 3,
        codebook_size: int = 8192,
        code_dim: int = 128,
        num_quantizers: int = 8,
        quantizer_type: str = "official",
        amplitude_side_information: str = "window_statistics",
        num_scale_tokens: int = 256,
        scale_mean_range: list[float] | None = None,
        scale_std_range: list[float] | None = None,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.0,
        kmeans_iters: int = 10,
        commitment_weight: float = 1.0,
        codebook_weight: float = 0.4,
        quantizer_loss_weight: float = 1.0,
        amplitude_loss_weight: float = 1.0,
        phase_loss_weight: float = 1.0,
        time_loss_weight: float = 1.0,
        difference_loss_weight: float = 0.0,
        phase_norm_weight: float = 0.1,
        layer_norm_eps: float = 1e-5,
        qk_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        band_edges: list[int] | None = None,
        gain_split: int = 16,
        log_gain_range: list[float] | None = None,
        refiner_layers: int = 0,
        refiner_hidden_size: int = 128,
        refiner_heads: int = 4,
        noise_filling_levels: list[float] | None = None,
        **kwargs,
    ):
        self.noise_filling_levels = None if noise_filling_levels is None else [float(v) for v in noise_filling_levels]
        self.refiner_layers = refiner_layers
        self.refiner_hidden_size = refiner_hidden_size
        self.refiner_heads = refiner_heads
        self.token_design = token_design
        self.band_edges = list(band_edges or [0, 16, 32, 60, 200])
        self.gain_split = gain_split
        self.log_gain_range = list(log_gain_range or [-4.0, 7.0])
        self.sampling_rate = sampling_rate
        self.patch_size = patch_size
        self.max_patches = max_patches
        self.channel_vocabulary = list(channel_vocabulary if channel_vocabulary is not None else CHANNEL_VOCABULARY)
        self.conv_channels = conv_channels
        self.conv_kernel_sizes = [list(k) for k in (conv_kernel_sizes or [[21, 9], [15, 7], [9, 5], [5, 3]])]
        self.conv_pool_sizes = list(conv_pool_sizes or [2, 4])
        self.conv_groups = conv_groups
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.mlp_ratio = mlp_ratio
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.num_quantizers = num_quantizers
        self.quantizer_type = quantizer_type
        self.amplitude_side_information = amplitude_side_information
        self.num_scale_tokens = num_scale_tokens
        self.scale_mean_range = list(scale_mean_range or [-1.0, 11.0])
        self.scale_std_range = list(scale_std_range or [0.0, 3.0])
        self.ema_decay = ema_decay
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_iters = kmeans_iters
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.quantizer_loss_weight = quantizer_loss_weight
        self.amplitude_loss_weight = amplitude_loss_weight
        self.phase_loss_weight = phase_loss_weight
        self.time_loss_weight = time_loss_weight
        self.difference_loss_weight = difference_loss_weight
        self.phase_norm_weight = phase_norm_weight
        self.layer_norm_eps = layer_norm_eps
        self.qk_norm_eps = qk_norm_eps
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self.validate()

    @property
    def num_scales(self) -> int:
        """Number of scales S: one conv branch, one quantizer and one decoder input per scale (`released`),
        or one frequency band and its quantizer (`mdct`)."""
        if self.token_design == "mdct":
            return len(self.band_edges) - 1
        return len(self.conv_kernel_sizes)

    @property
    def band_widths(self) -> list[int]:
        """`mdct`: coefficients per band (the code dimension of each band's quantizer)."""
        return [high - low for low, high in zip(self.band_edges[:-1], self.band_edges[1:])]

    def validate(self) -> None:
        """Raise `ValueError` naming the first invalid field."""

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"NeuroRVQConfig.{name} must be a positive integer, got {value!r}")

        for name in ("sampling_rate", "patch_size", "max_patches", "conv_channels", "conv_groups", "hidden_size",
                     "num_attention_heads", "encoder_layers", "decoder_layers", "codebook_size", "code_dim",
                     "num_quantizers", "kmeans_iters", "num_scale_tokens"):
            positive_int(name)
        for name in ("mlp_ratio", "layer_norm_eps", "qk_norm_eps", "initializer_range"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"NeuroRVQConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("commitment_weight", "codebook_weight", "quantizer_loss_weight", "amplitude_loss_weight",
                     "phase_loss_weight", "time_loss_weight", "phase_norm_weight", "difference_loss_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"NeuroRVQConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"NeuroRVQConfig.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not float(self.dead_code_threshold) >= 0:
            raise ValueError(f"NeuroRVQConfig.dead_code_threshold must be >= 0, got {self.dead_code_threshold!r}")
        if self.amplitude_side_information not in AMPLITUDE_SIDE_INFORMATION:
            raise ValueError(f"NeuroRVQConfig.amplitude_side_information must be one of {AMPLITUDE_SIDE_INFORMATION}, "
                             f"got {self.amplitude_side_information!r}")
        for name in ("scale_mean_range", "scale_std_range"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or not float(low_high[0]) < float(low_high[1]):
                raise ValueError(f"NeuroRVQConfig.{name} must be [low, high] with low < high, got {low_high!r}")
        if self.num_scale_tokens < 2:
            raise ValueError(f"NeuroRVQConfig.num_scale_tokens must be >= 2, got {self.num_scale_tokens!r}")
        if self.token_design not in TOKEN_DESIGNS:
            raise ValueError(f"NeuroRVQConfig.token_design must be one of {TOKEN_DESIGNS}, got {self.token_design!r}")
        if self.token_design == "mdct":
            self._validate_mdct()
        elif self.noise_filling_levels is not None:
            raise ValueError("NeuroRVQConfig.noise_filling_levels belongs to the mdct design (the released design "
                             "restores amplitude with decode(normalize_phase=True))")
        elif float(self.difference_loss_weight):
            raise ValueError("NeuroRVQConfig.difference_loss_weight belongs to the mdct design (its refiner); the "
                             "released design's losses are its own")
        if self.quantizer_type not in QUANTIZER_TYPES:
            raise ValueError(f"NeuroRVQConfig.quantizer_type must be one of {QUANTIZER_TYPES}, got {self.quantizer_type!r}")
        vocabulary = self.channel_vocabulary
        if not vocabulary or any(not isinstance(n, str) or n != n.lower() or not n for n in vocabulary):
            raise ValueError("NeuroRVQConfig.channel_vocabulary must be a non-empty list of lower-case names")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("NeuroRVQConfig.channel_vocabulary has duplicate names")
        if not self.conv_kernel_sizes or any(
            len(k) != len(self.conv_pool_sizes) or any(not isinstance(s, int) or s <= 0 or s % 2 == 0 for s in k)
            for k in self.conv_kernel_sizes
        ):
            raise ValueError(
                "NeuroRVQConfig.conv_kernel_sizes must list, per scale, one odd positive kernel size per conv stage "
                f"({len(self.conv_pool_sizes)} stages), got {self.conv_kernel_sizes!r}"
            )
        pool = 1
        for p in self.conv_pool_sizes:
            if not isinstance(p, int) or p <= 0:
                raise ValueError(f"NeuroRVQConfig.conv_pool_sizes must be positive integers, got {self.conv_pool_sizes!r}")
            pool *= p
        if self.patch_size % pool:
            raise ValueError(f"NeuroRVQConfig.patch_size ({self.patch_size}) must be divisible by prod(conv_pool_sizes) ({pool})")
        if self.conv_channels % self.conv_groups:
            raise ValueError(f"NeuroRVQConfig.conv_groups ({self.conv_groups}) must divide conv_channels ({self.conv_channels})")
        if self.patch_size // pool * self.conv_channels != self.hidden_size:
            raise ValueError(
                f"NeuroRVQConfig.hidden_size ({self.hidden_size}) must equal patch_size / prod(conv_pool_sizes) * "
                f"conv_channels = {self.patch_size // pool * self.conv_channels}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"NeuroRVQConfig.num_attention_heads ({self.num_attention_heads}) must divide hidden_size ({self.hidden_size})"
            )

    def _validate_mdct(self) -> None:
        edges = self.band_edges
        if (len(edges) < 2 or any(isinstance(e, bool) or not isinstance(e, int) for e in edges) or edges[0] != 0
                or edges[-1] != self.patch_size or any(b <= a for a, b in zip(edges[:-1], edges[1:]))):
            raise ValueError(f"NeuroRVQConfig.band_edges must increase from 0 to patch_size={self.patch_size}, "
                             f"got {edges!r}")
        if self.patch_size % 2:
            raise ValueError(f"NeuroRVQConfig.patch_size must be even for the mdct design, got {self.patch_size}")
        if isinstance(self.gain_split, bool) or not isinstance(self.gain_split, int) or not 0 < self.gain_split < self.patch_size:
            raise ValueError(f"NeuroRVQConfig.gain_split must be an integer in (0, {self.patch_size}), got {self.gain_split!r}")
        if len(self.log_gain_range) != 2 or not float(self.log_gain_range[0]) < float(self.log_gain_range[1]):
            raise ValueError(f"NeuroRVQConfig.log_gain_range must be [low, high] with low < high, got {self.log_gain_range!r}")
        for name in ("refiner_hidden_size", "refiner_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"NeuroRVQConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.refiner_layers, bool) or not isinstance(self.refiner_layers, int) or self.refiner_layers < 0:
            raise ValueError(f"NeuroRVQConfig.refiner_layers must be an integer >= 0, got {self.refiner_layers!r}")
        if self.refiner_hidden_size % self.refiner_heads:
            raise ValueError(f"NeuroRVQConfig.refiner_heads ({self.refiner_heads}) must divide refiner_hidden_size "
                             f"({self.refiner_hidden_size})")
        if self.amplitude_side_information != "scale_tokens":
            raise ValueError("NeuroRVQConfig: the mdct design carries amplitude in scale tokens; set "
                             "amplitude_side_information='scale_tokens'")
        if self.quantizer_type != "standard":
            raise ValueError("NeuroRVQConfig: the mdct design uses quantizer_type='standard'")
        levels = self.noise_filling_levels
        if levels is not None and (len(levels) != self.patch_size or not all(math.isfinite(v) and v >= 0 for v in levels)):
            raise ValueError(f"NeuroRVQConfig.noise_filling_levels must be {self.patch_size} finite numbers >= 0 "
                             f"(one per MDCT coefficient), got {len(levels)} values")

    def bits_per_channel_second(self, num_quantizers: int | None = None, num_channels: int = 1,
                                num_patches: int = 1) -> float:
        """Bits spent per channel-second: S x K' codes of log2(codebook_size) bits, plus side information
        (scale tokens: 2 x log2(num_scale_tokens) per patch; window statistics: two float32 per window)."""
        k = num_quantizers or self.num_quantizers
        bits = self.num_scales * k * math.log2(self.codebook_size) * self.sampling_rate / self.patch_size
        if self.amplitude_side_information == "scale_tokens":
            return bits + 2 * math.log2(self.num_scale_tokens) * self.sampling_rate / self.patch_size
        return bits + 64.0 / (num_channels * num_patches * self.patch_size / self.sampling_rate)
