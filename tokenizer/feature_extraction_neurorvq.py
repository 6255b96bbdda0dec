"""Feature extractor for NeuroRVQ: EEG recordings in, model-ready windows of microvolts out.

Units: arrays and tensors given to the extractor are in **Volts** (as MNE holds EEG); one-column ``.txt``
files are in **microvolts** (as YASA writes them). Everything the extractor returns is in **microvolts**,
the unit the released model was trained on.

Pipeline for each recording (the released NeuroRVQ preprocessing, re-implemented with scipy):

1. keep EEG channels and map their labels onto the channel vocabulary (:mod:`.channels`);
2. Volts -> microvolts (x 1e6), float64;
3. IIR notch (``scipy.signal.iirnotch``, Q = f0 / 2) at each of ``notch_frequencies`` that lies below
   Nyquist, applied forward and backward (``scipy.signal.filtfilt``, zero phase);
4. Butterworth band-pass of order ``filter_order`` in transfer-function (b, a) form, from
   ``band_pass[0]`` to ``min(band_pass[1], fs / 2) - 0.5`` Hz, forward and backward (``filtfilt``);
5. clip to +-``clip_microvolts``;
6. FFT resampling (``scipy.signal.resample``) to ``sampling_rate`` Hz, to ``int(T / fs * sampling_rate)``
   samples (skipped when the rate already matches);
7. cut into windows of C channels x A patches of ``patch_size`` samples (C * A <= ``max_patches``); the
   last window is zero-padded and the padding is marked in ``padding_mask``. No sample is dropped. With
   ``segments`` (labelled stretches, say), steps 1-6 run on the whole recording and step 7 on each segment.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal
from transformers import BatchFeature, FeatureExtractionMixin

from .channels import CHANNEL_VOCABULARY, map_channel_names
from .checks import FLAT_STD, SignalQualityWarning, UnitWarning
from .configuration_neurorvq import PATCH_SIZE, SAMPLING_RATE

# The released code lowers the band-pass high edge by this much below min(high, Nyquist).
_HIGH_EDGE_MARGIN_HZ = 0.5
_ON_UNKNOWN = ("raise", "drop")
_RATE_IN_NAME = re.compile(r"(\d+(?:\.\d+)?)\s*hz", re.IGNORECASE)


def infer_channel_type(name: str) -> str | None:
    """Channel type implied by a label, or None when the label looks like EEG.

    EDF/BDF readers type every channel ``eeg``; this rule (from the shared data README) catches the
    non-EEG ones: ECG/EKG -> ``ecg``; EOG -> ``eog``; EMG/submental -> ``emg``; respiration,
    temperature, event/marker/status/trigger channels, the ``A2-A1`` reference difference, ``BIP*`` and
    ``acc*`` channels, oximetry and pulse -> ``misc``.
    """
    label = name.strip().lower()
    if "ecg" in label or "ekg" in label:
        return "ecg"
    if "eog" in label:
        return "eog"
    if "emg" in label or "submental" in label:
        return "emg"
    misc_words = ("resp", "temp", "event", "marker", "status", "trigger", "a2-a1", "a1-a2", "spo2", "sao2",
                  "pleth", "pulse")
    bare = label[4:] if label.startswith("eeg ") else label
    if any(word in label for word in misc_words) or bare.startswith(("bip", "acc")):
        return "misc"
    return None


class NeuroRVQFeatureExtractor(FeatureExtractionMixin):
    r"""Turn EEG (MNE objects, files, or Volt arrays) into NeuroRVQ input windows in microvolts.

    Args:
        sampling_rate (`int`, defaults to 200): rate (Hz) the model expects; every input is resampled to it.
        patch_size (`int`, defaults to 200): samples per patch (one token = one channel x one patch).
        max_patches (`int`, defaults to 256): most tokens (channels x patches) in one window.
        notch_frequencies (`list[float]`, defaults to `(50, 60, 100)`): line-noise notches (Hz); each is
            applied only when below the input's Nyquist frequency.
        band_pass (`list[float]`, defaults to `(0.5, 45)`): band-pass edges (Hz); the high edge used is
            `min(band_pass[1], fs / 2) - 0.5`, as released.
        filter_order (`int`, defaults to 3): Butterworth order.
        clip_microvolts (`float`, defaults to 500): clip level in µV after filtering (`None`: no clipping).
        channel_vocabulary (`list[str]`, defaults to the released 104 names): allowed channel names, in
            spatial-embedding order.
        on_unknown_channel (`str`, defaults to `"raise"`): `"raise"` or `"drop"` for channels whose label is
            not in the vocabulary.
        window_patches (`int`, *optional*): patches per channel per window (A). `None`: `max_patches // C`
            for C channels, i.e. the longest window that fits.
        window_stride_patches (`int`, *optional*): hop between window starts, in patches (1..A). `None`:
            A (non-overlapping windows).

    Calling the extractor returns a [`BatchFeature`] with
        - `input_values`: `[N, C, A * patch_size]` float32, microvolts, at `sampling_rate`;
        - `padding_mask`: `[N, C, A * patch_size]` int64, 1 = real sample, 0 = zero padding (only the tail
          of the last window of each recording, or of each epoch, is ever padded);
        - `channel_names`: list of the C vocabulary names (channel order of `input_values`, shared by all
          windows);
        - `sampling_rate`: the output rate (Hz).
    """

    model_input_names = ["input_values", "padding_mask"]

    def __init__(
        self,
        sampling_rate: int = SAMPLING_RATE,
        patch_size: int = PATCH_SIZE,
        max_patches: int = 256,
        notch_frequencies: Sequence[float] = (50.0, 60.0, 100.0),
        band_pass: Sequence[float] = (0.5, 45.0),
        filter_order: int = 3,
        clip_microvolts: float | None = 500.0,
        channel_vocabulary: Sequence[str] | None = None,
        on_unknown_channel: str = "raise",
        window_patches: int | None = None,
        window_stride_patches: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Lists, not tuples, so that the config survives a JSON round trip unchanged.
        self.sampling_rate = int(sampling_rate)
        self.patch_size = int(patch_size)
        self.max_patches = int(max_patches)
        self.notch_frequencies = [float(f) for f in notch_frequencies]
        self.band_pass = [float(f) for f in band_pass]
        self.filter_order = int(filter_order)
        self.clip_microvolts = None if clip_microvolts is None else float(clip_microvolts)
        self.channel_vocabulary = list(CHANNEL_VOCABULARY if channel_vocabulary is None else channel_vocabulary)
        self.on_unknown_channel = on_unknown_channel
        self.window_patches = None if window_patches is None else int(window_patches)
        self.window_stride_patches = None if window_stride_patches is None else int(window_stride_patches)
        self._validate_config()

    @classmethod
    def for_model(cls, config, **kwargs: Any) -> "NeuroRVQFeatureExtractor":
        """The released preprocessing for the model of `config` (a `NeuroRVQConfig`): its sampling rate, patch
        size, tokens per window and channel vocabulary; `kwargs` set the other options."""
        return cls(sampling_rate=config.sampling_rate, patch_size=config.patch_size, max_patches=config.max_patches,
                   channel_vocabulary=config.channel_vocabulary, **kwargs)

    def _validate_config(self) -> None:
        for field in ("sampling_rate", "patch_size", "max_patches", "filter_order"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)}")
        if len(self.band_pass) != 2 or not 0 < self.band_pass[0] < self.band_pass[1]:
            raise ValueError(f"band_pass must be (low, high) with 0 < low < high Hz, got {self.band_pass}")
        if any(f <= 0 for f in self.notch_frequencies):
            raise ValueError(f"notch_frequencies must be positive, got {self.notch_frequencies}")
        if self.clip_microvolts is not None and self.clip_microvolts <= 0:
            raise ValueError(f"clip_microvolts must be positive or None, got {self.clip_microvolts}")
        if self.on_unknown_channel not in _ON_UNKNOWN:
            raise ValueError(f"on_unknown_channel must be one of {_ON_UNKNOWN}, got {self.on_unknown_channel!r}")
        for field in ("window_patches", "window_stride_patches"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ValueError(f"{field} must be a positive integer or None, got {value}")
        if not self.channel_vocabulary:
            raise ValueError("channel_vocabulary must not be empty")

    # ------------------------------------------------------------------ public entry point

    def __call__(
        self,
        raw_or_path_or_array: Any,
        channel_names: Sequence[str] | None = None,
        sampling_rate: float | None = None,
        return_tensors: str | None = None,
        on_unknown_channel: str | None = None,
        window_patches: int | None = None,
        segments: Sequence[tuple[float, float]] | None = None,
        min_segment_seconds: float = 0.0,
    ) -> BatchFeature:
        """Preprocess and window one recording, or a list of them.

        Args:
            raw_or_path_or_array: one of
                - `mne.io.BaseRaw` (EEG in Volts, as MNE holds it);
                - `mne.BaseEpochs` (each epoch is filtered and windowed on its own);
                - a path (`str` / `os.PathLike`) to any file `mne.io.read_raw` reads, or to a `.txt` file with
                  one column (or `[T, C]` columns) of **microvolts**;
                - a numpy array or torch tensor `[C, T]` in **Volts** (needs `channel_names` and
                  `sampling_rate`);
                - a list of the above: their windows are concatenated along N (all must end up with the same
                  channels in the same order).
            channel_names: labels of the rows of an array, or of the columns of a `.txt` file. MNE objects and
                other files carry their own labels (passing `channel_names` with them is an error).
            sampling_rate: rate (Hz) of an array input or `.txt` file (for `.txt`, otherwise parsed from a
                `NNNHz` in the file name). For MNE inputs it may be given only if it matches the recording.
            return_tensors: `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.
            on_unknown_channel: overrides the instance's `"raise"` / `"drop"` for this call.
            window_patches: overrides the instance's patches per window (A) for this call.
            segments: `(start, stop)` pairs in seconds from the first sample of one recording (a Raw, a file or an
                array; not Epochs nor a list). The whole recording is preprocessed once, then each segment of the
                preprocessed signal is windowed on its own (no window spans two segments; the last window of each
                segment is zero-padded). `stop` may be `inf` (the end of the recording).
            min_segment_seconds: segments shorter than this (after clipping to the recording) give no window.

        Returns:
            [`BatchFeature`] with `input_values` `[N, C, A * patch_size]` (float32, µV), `padding_mask`
            (same shape, int64, 1 = real sample), `channel_names` (C vocabulary names) and `sampling_rate`.
            With `segments`, also `start_seconds` `[N]` (float64, the window's first sample, seconds from the
            recording's first sample) and `segment_index` `[N]` (int64, index into `segments`).
        """
        on_unknown, channel_names, sampling_rate = self._check_call_options(
            on_unknown_channel, return_tensors, channel_names, sampling_rate
        )
        eeg = raw_or_path_or_array
        items = list(eeg) if _is_batch(eeg) else [eeg]
        if not items:
            raise ValueError("got an empty list of recordings")
        if segments is not None:
            segments = _check_segments(segments, items, eeg)

        pieces, shared_names = [], None
        for item in items:
            for x_uv, labels, fs, source in self._load(item, channel_names, sampling_rate):
                names, x_uv = self._select_channels(x_uv, labels, on_unknown, source)
                shared_names = _check_same_channels(names, shared_names, source)
                # the signal checks warn at stacklevel=3, i.e. at the caller's line: keep them called from here
                check_channels(x_uv, names, source)
                x_uv = self.preprocess(x_uv, fs)
                self._check_clipping(x_uv, names, source)
                if segments is None:
                    pieces.append(self._window(x_uv, window_patches))
                else:
                    pieces.extend(self._window_segments(x_uv, segments, window_patches, min_segment_seconds))
        return self._batch_feature(pieces, shared_names, segments, window_patches, return_tensors)

    def _check_call_options(
        self,
        on_unknown_channel: str | None,
        return_tensors: str | None,
        channel_names: Sequence[str] | None,
        sampling_rate: float | None,
    ) -> tuple[str, list[str] | None, float | None]:
        """The call's `on_unknown_channel` (the instance's when None), `channel_names` as a list and `sampling_rate`
        as a float, after checking them and `return_tensors`."""
        on_unknown = self.on_unknown_channel if on_unknown_channel is None else on_unknown_channel
        if on_unknown not in _ON_UNKNOWN:
            raise ValueError(f"on_unknown_channel must be one of {_ON_UNKNOWN}, got {on_unknown!r}")
        if return_tensors not in (None, "np", "pt"):
            raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}")
        if channel_names is not None:
            if isinstance(channel_names, str) or not all(isinstance(n, str) for n in channel_names):
                raise ValueError("channel_names must be a list of strings, one per channel")
            channel_names = list(channel_names)
        if sampling_rate is not None:
            sampling_rate = _check_rate(sampling_rate)
        return on_unknown, channel_names, sampling_rate

    def _window_segments(
        self,
        x_uv: np.ndarray,
        segments: list[tuple[float, float]],
        window_patches: int | None,
        min_segment_seconds: float,
    ):
        """Yield `(input_values [n, C, L], padding_mask [n, C, L], start_seconds [n], segment_index [n])` for each
        segment of the preprocessed `[C, T]` recording `x_uv` that is at least `min_segment_seconds` long once
        clipped to the recording (segments in seconds from its first sample, at `self.sampling_rate`)."""
        n_samples = x_uv.shape[-1]
        for index, (start, stop) in enumerate(segments):
            first = min(int(round(start * self.sampling_rate)), n_samples)
            last = n_samples if math.isinf(stop) else min(int(round(stop * self.sampling_rate)), n_samples)
            if last <= first or last - first < min_segment_seconds * self.sampling_rate:
                continue
            window, mask = self._window(x_uv[:, first:last], window_patches)
            hop = self._hop(x_uv.shape[0], window_patches)
            start_seconds = (first + hop * np.arange(len(window))) / self.sampling_rate
            yield window, mask, start_seconds, np.full(len(window), index, dtype=np.int64)

    def _batch_feature(
        self,
        pieces: list[tuple[np.ndarray, ...]],
        channel_names: list[str],
        segments: list[tuple[float, float]] | None,
        window_patches: int | None,
        return_tensors: str | None,
    ) -> BatchFeature:
        """Concatenate the windows of all recordings along N into the returned [`BatchFeature`]. `pieces` holds
        `(input_values, padding_mask)` per recording, or per segment `(..., start_seconds, segment_index)`."""
        if not pieces:  # every segment was too short
            length = self.resolve_window_patches(len(channel_names), window_patches) * self.patch_size
            empty = (0, len(channel_names), length)
            pieces = [(np.zeros(empty, dtype=np.float32), np.zeros(empty, dtype=np.int64),
                       np.zeros(0), np.zeros(0, dtype=np.int64))]
        values, masks, *segment_columns = zip(*pieces)
        data = {
            "input_values": np.concatenate(values).astype(np.float32),
            "padding_mask": np.concatenate(masks),
            "channel_names": channel_names,
            "sampling_rate": self.sampling_rate,
        }
        if segments is not None:
            data["start_seconds"] = np.concatenate(segment_columns[0])
            data["segment_index"] = np.concatenate(segment_columns[1])
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion={"channel_names", "sampling_rate"})

    # ------------------------------------------------------------------ signal processing

    def preprocess(self, x_microvolts: np.ndarray, sampling_rate: float) -> np.ndarray:
        """Released NeuroRVQ filtering of a `[C, T]` microvolt array sampled at `sampling_rate` Hz.

        Notches, band-pass, clip, then FFT resampling to `self.sampling_rate`. Returns float64 µV
        `[C, int(T / sampling_rate * self.sampling_rate)]`.
        """
        fs = _check_rate(sampling_rate)
        x = np.asarray(x_microvolts, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected a [channels, time] array, got shape {x.shape}")
        nyquist = fs / 2
        for f0 in self.notch_frequencies:
            if f0 < nyquist:
                b, a = signal.iirnotch(w0=f0, Q=f0 / 2, fs=fs)
                x = _filtfilt(b, a, x)
        low = self.band_pass[0]
        high = min(self.band_pass[1], nyquist) - _HIGH_EDGE_MARGIN_HZ
        if not low < high:
            raise ValueError(
                f"sampling rate {fs} Hz is too low for the {self.band_pass} Hz band-pass "
                f"(high edge would be {high} Hz)"
            )
        b, a = signal.butter(self.filter_order, [low, high], btype="bandpass", fs=fs)
        x = _filtfilt(b, a, x)
        if self.clip_microvolts is not None:
            clipped = np.mean(np.abs(x) >= self.clip_microvolts)
            if clipped > 0.5:
                warnings.warn(
                    f"{clipped:.0%} of the samples reach the +-{self.clip_microvolts} µV clip level: "
                    "check the units (arrays must be in Volts, .txt files in microvolts)",
                    UserWarning,
                    stacklevel=3,
                )
            x = np.clip(x, -self.clip_microvolts, self.clip_microvolts)
        if fs != self.sampling_rate:
            n_out = int(x.shape[-1] / fs * self.sampling_rate)  # floor, as released
            if n_out < 1:
                raise ValueError(
                    f"recording of {x.shape[-1]} samples at {fs} Hz is shorter than one sample at "
                    f"{self.sampling_rate} Hz"
                )
            x = signal.resample(x, n_out, axis=-1)
        return x

    def resolve_window_patches(self, n_channels: int, window_patches: int | None = None) -> int:
        """Patches per channel per window (A) for `n_channels` channels; checks C * A <= max_patches."""
        requested = self.window_patches if window_patches is None else int(window_patches)
        A = self.max_patches // n_channels if requested is None else requested  # default <= max_patches
        if A < 1 or n_channels * A > self.max_patches:
            raise ValueError(
                f"a window of C={n_channels} channels x A={A} patches needs {n_channels * max(A, 1)} tokens, "
                f"more than max_patches={self.max_patches}: use fewer channels"
                + (" or a smaller window_patches" if requested is not None else "")
            )
        return A

    def _hop(self, n_channels: int, window_patches: int | None) -> int:
        """Samples between the starts of consecutive windows."""
        A = self.resolve_window_patches(n_channels, window_patches)
        stride = A if self.window_stride_patches is None else self.window_stride_patches
        if stride > A:
            raise ValueError(
                f"window_stride_patches={stride} is larger than the window (A={A} patches): samples would be skipped"
            )
        return stride * self.patch_size

    def _window(self, x: np.ndarray, window_patches: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Cut `[C, T]` into `[N, C, A * patch_size]` windows plus the matching 0/1 padding mask."""
        C, T = x.shape
        A = self.resolve_window_patches(C, window_patches)
        length, hop = A * self.patch_size, self._hop(C, window_patches)
        n = 1 if T <= length else 1 + math.ceil((T - length) / hop)
        values = np.zeros((n, C, length), dtype=np.float32)
        mask = np.zeros((n, C, length), dtype=np.int64)
        for k in range(n):
            piece = x[:, k * hop : k * hop + length]
            values[k, :, : piece.shape[1]] = piece
            mask[k, :, : piece.shape[1]] = 1
        return values, mask

    def _check_clipping(self, x: np.ndarray, names: list[str], source: str) -> None:
        """Warn about channels that spend more than half of their samples at the clip level (a different unit);
        when every channel does, `preprocess` already said so."""
        if self.clip_microvolts is None or x.size == 0:
            return
        share = np.mean(np.abs(x) >= self.clip_microvolts, axis=-1)
        over = np.flatnonzero(share > 0.5)
        clipped = [f"{names[i]} ({share[i]:.0%})" for i in over]
        if clipped and len(over) < len(names):
            warnings.warn(f"{source}: channel(s) {clipped} reach the +-{self.clip_microvolts:g} µV clip level and are "
                          "clipped: check their units (a channel in microvolts among channels in Volts is 1e6 times too "
                          "loud) or the electrode contact", SignalQualityWarning, stacklevel=3)

    # ------------------------------------------------------------------ input handling

    def _select_channels(
        self, x_uv: np.ndarray, labels: list[str], on_unknown: str, source: str
    ) -> tuple[list[str], np.ndarray]:
        """Map labels onto the vocabulary, keep those rows, and reject non-finite samples."""
        try:
            names, kept = map_channel_names(labels, self.channel_vocabulary, on_unknown=on_unknown)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        x_uv = x_uv[kept]
        bad = [labels[kept[i]] for i in np.flatnonzero(~np.isfinite(x_uv).all(axis=1))]
        if bad:
            raise ValueError(f"{source}: NaN or Inf samples in channel(s) {bad}; interpolate or drop them first")
        return names, x_uv

    def _load(self, item: Any, channel_names: list[str] | None, sampling_rate: float | None):
        """Yield `(x_microvolts [C, T] float64, labels, fs, description)` for one input item."""
        import mne

        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.suffix.lower() == ".txt":
                yield self._load_text(path, channel_names, sampling_rate)
                return
            item = read_recording(path)
            source = f"file {path}"
        elif isinstance(item, mne.io.BaseRaw):
            source = "Raw"
        elif isinstance(item, mne.BaseEpochs):
            source = "Epochs"
        elif _is_array(item) or isinstance(item, (list, tuple)):
            yield self._load_array(item, channel_names, sampling_rate)
            return
        else:
            raise TypeError(
                f"unsupported EEG input of type {type(item).__name__}: pass an mne Raw or Epochs, a file path, "
                "or a [channels, time] array in Volts"
            )

        if channel_names is not None:
            raise ValueError(f"{source} carries its own channel labels; do not pass channel_names with it")
        fs = float(item.info["sfreq"])
        if sampling_rate is not None and not math.isclose(sampling_rate, fs):
            raise ValueError(f"sampling_rate={sampling_rate} Hz contradicts the {fs} Hz of {source}")
        picks = _eeg_picks(item.ch_names, item.get_channel_types(), item.info["bads"])
        if not picks:
            raise NoEEGSignalError(
                f"{source} has no EEG channel (channels {item.ch_names} with types "
                f"{item.get_channel_types()}; bads {item.info['bads']})"
            )
        labels = [item.ch_names[i] for i in picks]
        if isinstance(item, mne.BaseEpochs):
            data = item.get_data(picks=picks)
            if len(data) == 0:
                raise ValueError(f"{source} contains no epoch")
            for k, epoch in enumerate(data):
                yield np.asarray(epoch, dtype=np.float64) * 1e6, labels, fs, f"{source} epoch {k}"
        else:
            data = np.asarray(item.get_data(picks=picks), dtype=np.float64) * 1e6
            if data.shape[-1] == 0:
                raise ValueError(f"{source} contains no sample")
            yield data, labels, fs, source

    def _load_array(self, array: Any, channel_names: list[str] | None, sampling_rate: float | None):
        if hasattr(array, "detach"):  # torch tensor
            array = array.detach().cpu().numpy()
        x = np.asarray(array)
        if x.ndim != 2:
            raise ValueError(
                f"an EEG array must be [channels, time] (rank 2), got rank {x.ndim} with shape {x.shape}; "
                "pass a list of [C, T] arrays for several recordings"
            )
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"an EEG array must hold real numbers, got dtype {x.dtype}")
        if channel_names is None:
            raise ValueError("an array input needs channel_names (one label per row)")
        if len(channel_names) != x.shape[0]:
            raise ValueError(f"got {len(channel_names)} channel_names for an array of {x.shape[0]} channels {x.shape}")
        if sampling_rate is None:
            raise ValueError("an array input needs sampling_rate (Hz)")
        if x.shape[1] == 0:
            raise ValueError(f"the EEG array has no sample (shape {x.shape})")
        return x.astype(np.float64) * 1e6, channel_names, sampling_rate, "array"

    def _load_text(self, path: Path, channel_names: list[str] | None, sampling_rate: float | None):
        if not path.is_file():
            raise ValueError(f"EEG file not found: {path}")
        if sampling_rate is None:
            rate = rate_from_file_name(path)
            if rate is None:
                raise ValueError(
                    f"no sampling rate for {path}: pass sampling_rate or put it in the file name (e.g. '_200Hz')"
                )
            sampling_rate = _check_rate(rate)
        try:
            x = np.loadtxt(path, dtype=np.float64, ndmin=2).T  # [T, C] in the file -> [C, T]
        except Exception as err:
            raise ValueError(f"could not read EEG text file {path}: {err}") from err
        if x.shape[1] == 0:
            raise ValueError(f"EEG text file {path} contains no sample")
        if channel_names is None:
            raise ValueError(f"text file {path} has no channel labels: pass channel_names ({x.shape[0]} names)")
        if len(channel_names) != x.shape[0]:
            raise ValueError(f"got {len(channel_names)} channel_names for {x.shape[0]} column(s) in {path}")
        return x, channel_names, sampling_rate, f"file {path}"  # already microvolts


def check_channels(x_uv: np.ndarray, names: list[str], source: str) -> None:
    """Warn about flat channels (no signal), amplifier-saturated channels (flat tops at their extreme value) and
    channels a thousand times louder than the others (a different unit). Called before filtering, in µV."""
    if x_uv.ndim != 2 or x_uv.shape[-1] < 2:
        return
    std = x_uv.std(axis=-1)
    flat = std <= FLAT_STD
    if flat.all():
        warnings.warn(f"{source}: every channel is flat (constant): there is no EEG signal in it; its codes and "
                      "reconstruction metrics mean nothing", SignalQualityWarning, stacklevel=3)
        return
    if flat.any():
        warnings.warn(f"{source}: flat (constant) channel(s) {[names[i] for i in np.flatnonzero(flat)]}: they carry no "
                      "EEG; drop them or mark them bad", SignalQualityWarning, stacklevel=3)
    live = np.flatnonzero(~flat)
    top, bottom = x_uv.max(axis=-1), x_uv.min(axis=-1)
    at_extreme = np.maximum(np.mean(x_uv == top[:, None], axis=-1), np.mean(x_uv == bottom[:, None], axis=-1))
    saturated = [names[i] for i in live if at_extreme[i] > 0.01 and x_uv.shape[-1] >= 1000]
    if saturated:
        warnings.warn(f"{source}: channel(s) {saturated} sit at their extreme value for more than 1% of the samples: "
                      "the amplifier saturated (clipped); those stretches are not EEG", SignalQualityWarning, stacklevel=3)
    if live.size > 1:
        median = float(np.median(std[live]))
        loud = [names[i] for i in live if std[i] > 1000 * median]
        if loud:
            warnings.warn(f"{source}: channel(s) {loud} are more than 1000x louder than the median channel "
                          f"({median:.3g} µV std): a different unit (microvolts among Volts?); they will be clipped",
                          UnitWarning, stacklevel=3)


def _check_same_channels(names: list[str], shared_names: list[str] | None, source: str) -> list[str]:
    """The channels every recording of a batch must have (the first one's); `names` are those of `source`."""
    if shared_names is not None and names != shared_names:
        raise ValueError(
            f"all recordings of a batch must map to the same channels in the same order; "
            f"{source} has {names}, an earlier one has {shared_names}. Process them separately."
        )
    return names if shared_names is None else shared_names


def _check_segments(segments: Any, items: list, eeg: Any) -> list[tuple[float, float]]:
    """`segments` as a list of `(start, stop)` floats with 0 <= start < stop; one Raw, file or array only."""
    import mne

    if len(items) != 1 or _is_batch(eeg) or isinstance(items[0], mne.BaseEpochs):
        raise ValueError("segments apply to one recording (a Raw, a file or an array), not to Epochs or a list")
    checked = []
    for pair in segments:
        try:
            start, stop = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"segments must be (start, stop) pairs of seconds, got {pair!r}") from None
        if not (math.isfinite(start) and 0 <= start < stop) or math.isnan(stop):
            raise ValueError(f"a segment must satisfy 0 <= start < stop (seconds), got ({start}, {stop})")
        checked.append((start, stop))
    return checked


def _filtfilt(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Zero-phase filtering as released (`filtfilt`, odd padding); shortens the padding for tiny inputs."""
    padlen = min(3 * max(len(a), len(b)), x.shape[-1] - 1)
    return signal.filtfilt(b, a, x, axis=-1, padlen=padlen)


def _check_rate(rate: Any) -> float:
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"sampling_rate must be a number of Hz, got {rate!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"sampling_rate must be positive and finite, got {rate!r}")
    return value


def _eeg_picks(names: list[str], types: list[str], bads: list[str]) -> list[int]:
    """Indices of EEG channels: typed `eeg`, not marked bad, and not non-EEG by label."""
    return [
        i
        for i, (name, kind) in enumerate(zip(names, types))
        if kind == "eeg" and name not in bads and infer_channel_type(name) is None
    ]


def rate_from_file_name(path: str | os.PathLike) -> float | None:
    """The sampling rate written in a file name as `NNNHz` (the last one), or None."""
    found = _RATE_IN_NAME.findall(Path(path).name)
    return float(found[-1]) if found else None


def read_recording(path: str | os.PathLike):
    """`mne.io.read_raw(path, preload=True)` with a `ValueError` naming the file when it is missing or unreadable."""
    import mne

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"EEG file not found: {path}")
    _check_edf_family_name(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = mne.io.read_raw(path, preload=True, verbose="warning")
    except Exception as err:
        raise ValueError(f"could not read EEG file {path}: {type(err).__name__}: {err}") from err
    for warning in caught:
        message = str(warning.message)
        if "does not match the file size" in message:  # MNE's words for a truncated EDF/BDF
            seconds = raw.n_times / raw.info["sfreq"]
            declared = _declared_edf_seconds(path)
            of = f" of the {declared:g} s its header declares" if declared else ""
            warnings.warn(TruncatedRecordingWarning(
                f"{path} is truncated: read {seconds:g} s{of} (the file ends early: an interrupted copy or "
                "recording); only the part present is used"), stacklevel=2)
    if not raw.ch_names:
        raise NoEEGSignalError(f"{path} holds no signal channel (an annotation-only file?): nothing to read as EEG")
    return raw


class NoEEGSignalError(ValueError):
    """A recording holds no EEG signal: no signal channel at all (an annotation-only EDF such as a hypnogram) or
    no channel of EEG type. Nothing in it to tokenize; `prepare_dataset` skips such files whatever `on_error`."""


class TruncatedRecordingWarning(SignalQualityWarning):
    """A recording file ends before the length its header declares."""


_EDF_MAGIC, _BDF_MAGIC = b"0       ", b"\xffBIOSEMI"


def _check_edf_family_name(path: Path) -> None:
    """An EDF file named .bdf (or a BDF named .edf) is read by the wrong MNE reader: say so plainly."""
    suffix = path.suffix.lower()
    if suffix not in (".edf", ".bdf"):
        return
    with path.open("rb") as handle:
        magic = handle.read(8)
    if suffix == ".bdf" and magic == _EDF_MAGIC:
        raise ValueError(f"{path} is an EDF file with a .bdf name: rename it to {path.with_suffix('.edf').name}")
    if suffix == ".edf" and magic == _BDF_MAGIC:
        raise ValueError(f"{path} is a BDF file with an .edf name: rename it to {path.with_suffix('.bdf').name}")


def _declared_edf_seconds(path: Path) -> float | None:
    """Duration an EDF/BDF header declares (records x record duration), or None."""
    try:
        with path.open("rb") as handle:
            header = handle.read(256)
        records, duration = int(header[236:244].decode("ascii").strip()), float(header[244:252].decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return records * duration if records > 0 and duration > 0 else None


def _is_array(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) or (hasattr(obj, "detach") and hasattr(obj, "numpy"))


def _is_batch(obj: Any) -> bool:
    """A list/tuple of recordings (not a nested list of numbers, which is one array)."""
    import mne

    if not isinstance(obj, (list, tuple)) or not obj:
        return isinstance(obj, (list, tuple))
    return all(
        isinstance(o, (str, os.PathLike, mne.io.BaseRaw, mne.BaseEpochs)) or _is_array(o) for o in obj
    )


__all__ = ["NeuroRVQFeatureExtractor", "NoEEGSignalError", "TruncatedRecordingWarning", "check_channels", "infer_channel_type"]
