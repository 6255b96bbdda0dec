"""`transformers.pipeline("eeg-generation")`: sample synthetic EEG from a large brainwave model (LBM).

The LBM samples tokenizer codes; the NeuroRVQ tokenizer (an extra component, loaded from
`model.config.tokenizer_name_or_path` unless `tokenizer_model=` is given) decodes them to microvolts (a
released-design tokenizer with `normalize_phase=True`, for realistic amplitude; an mdct tokenizer decodes prompt and
continuation as one signal, so there is no jump at the join, with noise filling of the generated seconds, so that
their band powers are real ones).

    from transformers import pipeline
    import neurorvq.pipelines  # registers the tasks
    from neurorvq.lbm import LBMForCausalLM

    generator = pipeline("eeg-generation", model=LBMForCausalLM.from_pretrained("neurorvq/lbm-small"))
    out = generator(seconds=10, montage="standard_1020", seed=0)
    out["eeg"]            # np.ndarray [19, 2000] µV at out["sampling_rate"] = 200 Hz
    out["channel_names"]  # ["fp1", "fp2", ...]

`pipeline("eeg-generation")` (no model) uses the bundled LBM and tokenizer, offline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from neurorvq.lbm.sampling import (
    band_temperatures,
    check_count,
    check_seed,
    check_stream_temperatures,
    check_temperature,
    check_top_k,
    check_top_p,
    decode_generated,
    decoding_noise,
    default_temperature,
    generation_kwargs,
)

from ._eeg import (
    DEFAULT_TOKENIZER,
    SAMPLING_RATE,
    decode_codes,
    encode_windows,
    load_recording,
    resolve_channels,
    to_raw,
)


_PREPROCESS = ("seconds", "num_patches", "channel_names", "montage", "num_samples", "prompt_channel_names",
               "prompt_sampling_rate", "prompt_seconds")
_FORWARD = ("temperature", "slow_temperature", "stream_temperatures", "top_k", "top_p", "seed", "progress", "condition",
            "guidance_scale", "num_rounds", "unmasking")
_POSTPROCESS = ("return_raw",)


def load_eeg_tokenizer(name_or_model=None, default: str = DEFAULT_TOKENIZER):
    """A `NeuroRVQTokenizer` (eval mode) from a model object, a folder / bundled name, or `default`."""
    from neurorvq.tokenizer import NeuroRVQTokenizer
    from neurorvq.tokenizer.loading import load_model

    if isinstance(name_or_model, NeuroRVQTokenizer):
        return name_or_model.eval()
    return load_model(NeuroRVQTokenizer, name_or_model or default).eval()


class EEGGenerationPipeline(Pipeline):
    """Sample synthetic EEG from an `LBMForCausalLM`, optionally continuing a real recording.

    Init args (besides `model`): `tokenizer_model` — a `NeuroRVQTokenizer`, folder or bundled name (default:
    `model.config.tokenizer_name_or_path`).

    Call args (all keywords; the optional first positional argument is the `prompt`):
        prompt: optional recording to continue: an `mne.io.Raw`, a file path, or a [C, T] array in Volts (then
            `prompt_channel_names` and `prompt_sampling_rate` are required). It is preprocessed, encoded and its
            codes are the LBM prompt; the output starts with the prompt decoded from its own codes.
        prompt_seconds: use only the first seconds of the prompt (default: all of it).
        seconds / num_patches: seconds (= patches) to generate after the prompt (default 10), integer > 0.
        channel_names / montage: channels to generate (list or comma-separated names, or `"standard_1020"`);
            default: the prompt's channels, else standard_1020. With a prompt they select prompt channels.
        temperature, top_k, top_p: sampling controls. Default: the model's own — a spatial LBM's
            `generation_config` (temperature, per-stream temperature scales, top-k / top-p, guidance, rounds,
            unmasking, last_round_temperature_scale, choice_temperature, window_shift: the bundled one's were chosen
            by the realism report and the speed benchmark, see its model card); for a depth-wise / flattened LBM,
            temperature `DEFAULT_TEMPERATURE` (0.8) x its `config.stream_temperature_scales`.
        num_rounds, unmasking: spatial LBMs only: parallel decoding rounds per second (more = closer to sampling
            cell by cell, slower) and which cells a round keeps ("confidence", "random" or "spread").
        stream_temperatures: optional M temperatures, one per code stream (`model.code_layout.stream_names`),
            replacing `temperature`, `slow_temperature` and the model's profile (e.g. `[0.9] * 18`: more diverse
            samples, as for training a classifier on synthetic EEG).
        slow_temperature: optional temperature of the codes of an mdct tokenizer's slow bands (< 8 Hz for the
            bundled one; the rest keep `temperature`). Colder slow bands give channels more of the shared slow
            waveform, at a cost in theta power and seams (measured on the previous bundle: mean |inter-channel r| 0.15
            -> 0.35 at 0.3, theta -2.9 dB). The current bundle's samples correlate as real EEG does without it (0.53 vs
            0.52): off by default.
        seed: integer for reproducible samples (same seed -> identical output); None: torch's global RNG.
        condition: a brain state the model knows (`model.config.condition_names`, e.g. "eyes_closed"; listed in its
            model card), applied to every sample; None = unconditional. An unknown name is an error listing the
            known ones.
        guidance_scale: classifier-free guidance with `condition` (default: the model's; 1 = plain conditional sampling; > 1 pushes
            samples further towards the condition, at twice the compute).
        num_samples: independent samples (default 1); > 1 returns a list.
        return_raw: also return `"raw"`, an `mne.io.RawArray` in Volts with conventional channel names.
        progress: show a tqdm bar over the generated seconds.

    Returns (per sample): `{"eeg": np.ndarray [C, T] µV, "sampling_rate": 200, "channel_names": [...],
    "prompt_seconds": int}` (+ `"raw"`), a list when num_samples > 1.
    """

    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_processor = False

    def __init__(self, *args, tokenizer_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eeg_tokenizer = load_eeg_tokenizer(
            tokenizer_model, getattr(self.model.config, "tokenizer_name_or_path", None) or DEFAULT_TOKENIZER)
        self.eeg_tokenizer.to(self.device)
        self.model.eval()

    def _sanitize_parameters(self, **kwargs):
        unknown = set(kwargs) - set(_PREPROCESS + _FORWARD + _POSTPROCESS)
        if unknown:
            raise ValueError(f"unknown arguments {sorted(unknown)}")
        # sampling controls are checked here, before the prompt is read and encoded
        for name in ("temperature", "slow_temperature"):
            if kwargs.get(name) is not None:
                kwargs[name] = check_temperature(kwargs[name])
        if kwargs.get("stream_temperatures") is not None:
            if kwargs.get("slow_temperature") is not None:
                raise ValueError("give stream_temperatures or slow_temperature, not both")
            kwargs["stream_temperatures"] = check_stream_temperatures(self.model.config, kwargs["stream_temperatures"])
        for name, check in (("top_k", check_top_k), ("top_p", check_top_p), ("seed", check_seed)):
            if name in kwargs:
                kwargs[name] = check(kwargs[name])
        if kwargs.get("condition") is not None:
            self.model.config.condition_id(kwargs["condition"])  # an unknown name fails before any work
        if kwargs.get("guidance_scale") not in (None, 1.0) and kwargs.get("condition") is None:
            raise ValueError("guidance_scale needs a condition (it contrasts conditional and unconditional samples)")
        pick = lambda names: {k: kwargs[k] for k in names if k in kwargs}  # noqa: E731
        return pick(_PREPROCESS), pick(_FORWARD), pick(_POSTPROCESS)

    def __call__(self, prompt: Any = None, **kwargs):
        return super().__call__(prompt, **kwargs)

    # ---- steps --------------------------------------------------------------------------------------

    def preprocess(self, prompt, seconds=None, num_patches=None, channel_names=None, montage=None, num_samples=1,
                   prompt_channel_names=None, prompt_sampling_rate=None, prompt_seconds=None):
        if seconds is not None and num_patches is not None:
            raise ValueError("pass seconds or num_patches, not both")
        patches = check_count("seconds / num_patches",
                              num_patches if num_patches is not None else (10 if seconds is None else seconds))
        num_samples = check_count("num_samples", num_samples)
        if prompt_seconds is not None:
            prompt_seconds = check_count("prompt_seconds", prompt_seconds)
        channels = resolve_channels(channel_names, montage)
        inputs = {"num_patches": patches, "num_samples": num_samples, "prompt_codes": None,
                  "prompt_scale_codes": None}
        if prompt is None:
            inputs["channel_names"] = channels or resolve_channels(None, "standard_1020")
            return inputs
        # a lapped (mdct) tokenizer windows the last frame of an encoded signal as an end frame, which a
        # continuation would not match: one more second is read (when there is one) and its codes dropped
        lapped = self.eeg_tokenizer.encodes_whole_recordings
        windows = load_recording(prompt, prompt_channel_names, prompt_sampling_rate,
                                 max_seconds=None if prompt_seconds is None else prompt_seconds + lapped)
        if channels is not None:  # select (and order) prompt channels
            missing = [n for n in channels if n not in windows["channel_names"]]
            if missing:
                raise ValueError(f"channels {missing} are not in the prompt (it has {windows['channel_names']})")
            rows = [windows["channel_names"].index(n) for n in channels]
            windows = {"input_values": windows["input_values"][:, rows], "padding_mask": windows["padding_mask"][:, rows],
                       "channel_names": channels}
        encoded = encode_windows(self.eeg_tokenizer, windows)
        if lapped:
            keep = encoded["codes"].shape[-1] - 1
            if prompt_seconds is not None:
                keep = min(keep, prompt_seconds)
            if keep < 1:
                raise ValueError("a prompt needs at least 2 s of recording (the last second only closes the frames)")
            encoded["codes"], encoded["scale_codes"] = encoded["codes"][..., :keep], encoded["scale_codes"][..., :keep]
        if prompt_seconds is not None:
            if encoded["codes"].shape[-1] < prompt_seconds:
                raise ValueError(f"the prompt holds {encoded['codes'].shape[-1]} s, fewer than prompt_seconds={prompt_seconds}")
            encoded["codes"] = encoded["codes"][..., :prompt_seconds]
            if encoded["scale_codes"] is not None:
                encoded["scale_codes"] = encoded["scale_codes"][..., :prompt_seconds]
        inputs.update(channel_names=encoded["channel_names"], prompt_codes=encoded["codes"],
                      prompt_scale_codes=encoded["scale_codes"])
        return inputs

    def _forward(self, inputs, temperature=None, slow_temperature=None, stream_temperatures=None, top_k=None, top_p=None,
                 seed=None, progress=False, condition=None, guidance_scale=None, num_rounds=None, unmasking=None):
        streams = stream_temperatures
        if slow_temperature is not None:
            streams = band_temperatures(self.model.config, self.eeg_tokenizer.config,
                                        default_temperature(self.model) if temperature is None else temperature,
                                        slow_temperature)
        codes, scale_codes = generate_codes(self.model, inputs["channel_names"], inputs["num_patches"],
                                            inputs["num_samples"], inputs["prompt_codes"], inputs["prompt_scale_codes"],
                                            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                            progress=progress, stream_temperatures=streams, condition=condition,
                                            guidance_scale=guidance_scale, num_rounds=num_rounds, unmasking=unmasking)
        names = inputs["channel_names"]
        prompt_patches = 0 if inputs["prompt_codes"] is None else inputs["prompt_codes"].shape[-1]
        if self.eeg_tokenizer.decodes_whole_recordings:  # lapped frames: prompt and continuation decode as one, noise-filled after it
            noise = None if seed is None else torch.Generator().manual_seed(seed)
            pieces = [decode_generated(self.eeg_tokenizer, {"codes": codes, "scale_codes": scale_codes}, names, noise,
                                       prompt_patches, decoding_noise(self.model)).cpu().numpy()]
        else:
            pieces = []
            if prompt_patches:  # the prompt decodes on its own, exactly as its reconstruction from its codes
                pieces.append(decode_codes(self.eeg_tokenizer, codes[..., :prompt_patches], names,
                                           None if scale_codes is None else scale_codes[..., :prompt_patches]))
            pieces.append(decode_codes(self.eeg_tokenizer, codes[..., prompt_patches:], names,
                                       None if scale_codes is None else scale_codes[..., prompt_patches:]))
        eeg = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=-1)  # (an hour is 55 MB a copy)
        return {"eeg": eeg, "channel_names": names, "prompt_seconds": prompt_patches,
                "codes": codes, "scale_codes": scale_codes}

    def postprocess(self, outputs, return_raw=False):
        results = []
        for eeg in outputs["eeg"]:
            item = {"eeg": eeg.astype(np.float32, copy=False), "sampling_rate": SAMPLING_RATE,
                    "channel_names": list(outputs["channel_names"]), "prompt_seconds": outputs["prompt_seconds"]}
            if return_raw:
                item["raw"] = to_raw(eeg, outputs["channel_names"])
            results.append(item)
        return results[0] if len(results) == 1 else results


@torch.no_grad()
def generate_codes(model, channel_names, num_patches: int, num_samples: int = 1, prompt_codes=None,
                   prompt_scale_codes=None, seed: int | None = None, progress: bool = False, **sampling):
    """LBM sampling in steps of the model's context window (W patches), so that a tqdm bar can follow it.

    `sampling`: the sampling options of `model.generate` (temperature, top_k, top_p, stream_temperatures, condition,
    guidance_scale; num_rounds and unmasking for a spatial LBM); None or absent = the model's defaults (its
    `generation_config` for a spatial LBM; `DEFAULT_TEMPERATURE` for the others).

    Returns codes [B, S, K, C, A' + num_patches] and scale codes [B, 2, C, A' + num_patches] (or None), where
    A' is the prompt length; B = num_samples (a prompt [1, ...] is repeated B times).
    """
    from tqdm.auto import tqdm

    sampling = generation_kwargs(model, **sampling)
    seed = check_seed(seed)
    num_patches, num_samples = check_count("num_patches", num_patches), check_count("num_samples", num_samples)
    device = model.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    if prompt_codes is not None:
        prompt_codes = prompt_codes.to(device).expand(num_samples, *prompt_codes.shape[1:]).contiguous()
        if prompt_scale_codes is not None:
            prompt_scale_codes = prompt_scale_codes.to(device).expand(num_samples, *prompt_scale_codes.shape[1:]).contiguous()
    step = max(1, min(model.config.positions_per_context // len(channel_names), model.config.max_patches))
    codes, scale_codes, done = prompt_codes, prompt_scale_codes, 0
    with tqdm(total=num_patches, unit="s", desc="generating EEG", disable=not progress) as bar:
        while done < num_patches:
            n = min(step, num_patches - done)
            out = model.generate(list(channel_names), num_patches=n, prompt_codes=codes, prompt_scale_codes=scale_codes,
                                 generator=generator, batch_size=num_samples if codes is None else None, **sampling)
            codes, scale_codes, done = out["codes"], out["scale_codes"], done + n
            bar.update(n)
    return codes.cpu(), None if scale_codes is None else scale_codes.cpu()
