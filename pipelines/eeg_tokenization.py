"""`pipeline("eeg-tokenization")` and `pipeline("eeg-reconstruction")` around a `NeuroRVQTokenizer`.

    tok = pipeline("eeg-tokenization", model=NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small"))
    out = tok("recording.edf")       # or an mne.io.Raw, or a [C, T] Volt array with channel_names, sampling_rate
    out["codes"]                     # LongTensor [1, S, K, C, A]: A one-second patches of the whole recording
    out["scale_codes"]               # LongTensor [1, 2, C, A] (amplitude tokens) or None
    rec = pipeline("eeg-reconstruction", model=...)("recording.edf")
    rec["reconstruction"], rec["original"]   # np.ndarray [C, A*200] µV at 200 Hz (the tokenizer's rate)
    rec["zscored_mse"], rec["pcc"]           # the paper's z-scored MSE and mean per-channel Pearson r

Recordings are preprocessed by the released feature extractor (channels outside the vocabulary dropped), cut
into windows of at most `max_patches` tokens, encoded window by window and joined along time.
"""

from __future__ import annotations

from typing import Any

from transformers import Pipeline

from ._eeg import decode_codes, encode_windows, load_recording, to_raw

_PREPROCESS = ("channel_names", "sampling_rate", "max_seconds")


class _RecordingPipeline(Pipeline):
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_processor = False
    _POSTPROCESS: tuple = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model.eval()

    def _sanitize_parameters(self, **kwargs):
        unknown = set(kwargs) - set(_PREPROCESS + self._POSTPROCESS)
        if unknown:
            raise ValueError(f"unknown arguments {sorted(unknown)}")
        return ({k: kwargs[k] for k in _PREPROCESS if k in kwargs}, {},
                {k: kwargs[k] for k in self._POSTPROCESS if k in kwargs})

    def preprocess(self, recording: Any, channel_names=None, sampling_rate=None, max_seconds=None):
        if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, int)
                                        or max_seconds < 1):
            raise ValueError(f"max_seconds must be a positive integer, got {max_seconds!r}")
        return {"windows": load_recording(recording, channel_names, sampling_rate, max_seconds=max_seconds,
                                          config=self.model.config),
                "max_seconds": max_seconds}

    def _encode(self, inputs) -> dict:
        encoded = encode_windows(self.model, inputs["windows"])
        if inputs["max_seconds"] is not None:
            samples = inputs["max_seconds"] * self.model.config.sampling_rate
            a = samples // self.model.config.patch_size  # patches in max_seconds
            encoded["codes"] = encoded["codes"][..., :a]
            encoded["scale_codes"] = None if encoded["scale_codes"] is None else encoded["scale_codes"][..., :a]
            encoded["eeg"] = encoded["eeg"][:, :samples]
        return encoded


class EEGTokenizationPipeline(_RecordingPipeline):
    """Recording -> `{"codes": [1, S, K, C, A], "scale_codes": [1, 2, C, A] or None, "channel_names": [...],
    "seconds": A}`. Call args: `channel_names`, `sampling_rate` (for Volt arrays), `max_seconds`."""

    def _forward(self, inputs):
        return self._encode(inputs)

    def postprocess(self, encoded):
        return {"codes": encoded["codes"], "scale_codes": encoded["scale_codes"],
                "channel_names": encoded["channel_names"], "seconds": int(encoded["codes"].shape[-1])}


class EEGReconstructionPipeline(_RecordingPipeline):
    """Recording -> encode -> decode. Returns `{"original": [C, T] µV (preprocessed input), "reconstruction":
    [C, T] µV, "zscored_mse": float, "pcc": float, "channel_names", "sampling_rate" (the tokenizer's, Hz), "codes",
    "scale_codes"}` (+ `"raw"`: the reconstruction as `mne.io.RawArray` in Volts with `return_raw=True`).
    Call args: `channel_names`, `sampling_rate`, `max_seconds`, `return_raw`, `normalize_phase` and `noise_filling`
    (default False: the MSE-optimal decoding the metrics are defined with; True: real band powers at a higher MSE)."""

    _POSTPROCESS = ("return_raw", "normalize_phase", "noise_filling")

    def _forward(self, inputs):
        return self._encode(inputs)

    def postprocess(self, encoded, return_raw=False, normalize_phase=False, noise_filling=False):
        from neurorvq.tokenizer.metrics import pearson_correlation, zscored_mse

        names = encoded["channel_names"]
        reconstruction = decode_codes(self.model, encoded["codes"], names, encoded["scale_codes"],
                                      normalize_phase=normalize_phase, noise_filling=noise_filling)[0]
        original = encoded["eeg"]
        rate = self.model.config.sampling_rate
        out = {"original": original, "reconstruction": reconstruction, "channel_names": names,
               "sampling_rate": rate, "zscored_mse": zscored_mse(original, reconstruction),
               "pcc": pearson_correlation(original, reconstruction), "codes": encoded["codes"],
               "scale_codes": encoded["scale_codes"]}
        if return_raw:
            out["raw"] = to_raw(reconstruction, names, rate)
        return out
