"""Shared helpers of the pipelines: montages, recordings <-> codes in windows, output paths, MNE output.

Units: EEG arrays here are microvolts (µV) at the tokenizer's `config.sampling_rate` (200 Hz), shaped [C, T] (one
recording) or [B, C, T]; MNE objects hold Volts. Codes are [B, S, K, C, A] and scale codes [B, 2, C, A] (A patches
of `config.patch_size` samples: one second).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

# the default rate where no tokenizer is at hand (200 Hz; defined with the tokenizer's config)
from neurorvq.tokenizer.configuration_neurorvq import SAMPLING_RATE

DEFAULT_LBM = "neurorvq/lbm-small"
DEFAULT_TOKENIZER = "neurorvq/tokenizer-small"


def montage_channels(montage: str) -> list[str]:
    """Channel names (lower-case vocabulary names) of a named montage; only `"standard_1020"` (19 names)."""
    from neurorvq.tokenizer.channels import STANDARD_1020

    montages = {"standard_1020": list(STANDARD_1020)}
    key = str(montage).lower().replace("-", "_")
    if key not in montages:
        raise ValueError(f"unknown montage {montage!r}; known: {sorted(montages)}")
    return montages[key]


def resolve_channels(channel_names: Sequence[str] | str | None, montage: str | None,
                     default: Sequence[str] | None = None) -> list[str] | None:
    """Lower-case channel names from `channel_names` (list or comma-separated string) or a `montage`."""
    if channel_names is not None and montage is not None:
        raise ValueError("pass channel_names or montage, not both")
    if montage is not None:
        return montage_channels(montage)
    if channel_names is None:
        return None if default is None else list(default)
    if isinstance(channel_names, str):
        channel_names = [n.strip() for n in channel_names.split(",") if n.strip()]
    names = [str(n).lower() for n in channel_names]
    if not names:
        raise ValueError("channel_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"channel_names contain duplicates: {names}")
    return names


def display_name(name: str) -> str:
    """Vocabulary name -> conventional 10-20 capitalisation: fp1 -> Fp1, cz -> Cz, cpz -> CPz, af3 -> AF3."""
    upper = name.upper()
    if upper.startswith("FP"):
        upper = "Fp" + upper[2:]
    if upper.endswith("Z") and len(upper) > 1:
        upper = upper[:-1] + "z"
    return upper


def patches_per_window(tokenizer, num_channels: int) -> int:
    """Most patches per channel that one tokenizer call holds (C * A <= max_patches)."""
    a = tokenizer.config.max_patches // num_channels
    if a < 1:
        raise ValueError(f"{num_channels} channels exceed the tokenizer's {tokenizer.config.max_patches} tokens per window")
    return a


def load_recording(recording: Any, channel_names: Sequence[str] | None = None, sampling_rate: float | None = None,
                   max_seconds: int | None = None, window_patches: int | None = None, config=None) -> dict:
    """Preprocess a recording (an `mne.io.Raw`, a file path, or a [C, T] array in **Volts** with `channel_names`
    and `sampling_rate`) with the released feature extractor, for the tokenizer of `config` (its rate, patch size,
    tokens per window and vocabulary; None: the released model's).

    Returns a dict with `input_values` [N, C, A*P] µV (windows of A patches of P samples), `padding_mask` (same
    shape, 1 = real) and `channel_names` (C vocabulary names). Channels outside the vocabulary are dropped;
    `max_seconds` keeps only the windows needed for that many seconds.
    """
    from neurorvq.tokenizer import NeuroRVQFeatureExtractor
    from neurorvq.tokenizer.checks import FLAT_STD, channel_std

    is_path = isinstance(recording, (str, os.PathLike))
    if is_path and not Path(recording).exists():
        raise ValueError(f"recording {recording} does not exist")
    array = isinstance(recording, (np.ndarray, torch.Tensor))
    text = is_path and Path(recording).suffix.lower() == ".txt"  # microvolt columns: labels (and rate) given here
    extractor = (NeuroRVQFeatureExtractor(on_unknown_channel="drop") if config is None
                 else NeuroRVQFeatureExtractor.for_model(config, on_unknown_channel="drop"))
    batch = extractor(recording, channel_names=list(channel_names) if (array or text) and channel_names else None,
                      sampling_rate=sampling_rate if (array or text) else None, return_tensors="pt",
                      window_patches=window_patches)
    values, mask = batch["input_values"], batch["padding_mask"]
    std = channel_std(values, mask)  # [N, C], NaN where a window has no real sample
    if not torch.isnan(std).all() and bool((std[~torch.isnan(std)] <= FLAT_STD).all()):
        raise ValueError(f"every channel of {recording if is_path else 'the recording'} is flat (constant): there is "
                         "no EEG signal to encode, and correlation metrics would be undefined")
    if max_seconds is not None:
        seconds = values.shape[-1] / extractor.sampling_rate  # per window
        keep = math.ceil(int(max_seconds) / seconds)
        values, mask = values[:keep], mask[:keep]
    return {"input_values": values, "padding_mask": mask, "channel_names": list(batch["channel_names"])}


@torch.no_grad()
def encode_windows(tokenizer, windows: dict, batch_size: int = 8) -> dict:
    """Encode preprocessed windows (see `load_recording`) and join them along time.

    Returns `codes` [1, S, K, C, A_total], `scale_codes` [1, 2, C, A_total] (or None), `eeg` [C, A_total*P] µV
    (the preprocessed input, cut to whole real patches) and `channel_names`.
    """
    values, mask, names = windows["input_values"], windows["padding_mask"], windows["channel_names"]
    patch = tokenizer.config.patch_size
    if tokenizer.encodes_whole_recordings:  # lapped frames: the whole recording at once (no window edges)
        values = values.permute(1, 0, 2).reshape(1, values.shape[1], -1)
        mask = mask.permute(1, 0, 2).reshape(1, mask.shape[1], -1)
    codes, scales = [], []
    for start in range(0, values.shape[0], batch_size):
        out = tokenizer.encode(values[start:start + batch_size], names, padding_mask=mask[start:start + batch_size])
        codes.append(out.codes.cpu())
        scales.append(None if out.scale_codes is None else out.scale_codes.cpu())
    codes = torch.cat(codes)  # [N, S, K, C, A]
    n, s, k, c, a = codes.shape
    valid_patches = int(mask[:, 0].sum()) // patch  # whole real patches over all windows (padding is at the end)
    if valid_patches < 1:
        raise ValueError("the recording is shorter than one second after preprocessing")
    joined = codes.permute(1, 2, 3, 0, 4).reshape(1, s, k, c, n * a)[..., :valid_patches]
    scale_codes = None
    if scales[0] is not None:
        scale = torch.cat(scales)  # [N, 2, C, A]
        scale_codes = scale.permute(1, 2, 0, 3).reshape(1, 2, c, n * a)[..., :valid_patches]
    eeg = values.permute(1, 0, 2).reshape(c, -1)[:, : valid_patches * patch]
    return {"codes": joined, "scale_codes": scale_codes, "eeg": eeg.numpy(), "channel_names": list(names)}


@torch.no_grad()
def decode_codes(tokenizer, codes: torch.Tensor, channel_names: Sequence[str], scale_codes: torch.Tensor | None = None,
                 normalize_phase: bool = True, noise_filling: bool = False) -> np.ndarray:
    """Codes [B, S, K, C, A] (+ scale codes [B, 2, C, A]) -> EEG [B, C, A*P] µV, decoded in consecutive
    windows of `patches_per_window` patches (the tokenizer's context), starting at patch 0, or in one call when
    the tokenizer `decodes_whole_recordings`. `normalize_phase`, `noise_filling`: see `NeuroRVQTokenizer.decode`
    (the noise is seeded: a reconstruction is reproducible)."""
    a_total, c = codes.shape[-1], codes.shape[-2]
    # lapped frames decode in one call (the tokenizer windows its refiner itself): no seams between windows
    step = a_total if tokenizer.decodes_whole_recordings else patches_per_window(tokenizer, c)
    pieces = []
    for start in range(0, a_total, step):
        part = slice(start, min(start + step, a_total))
        sc = None if scale_codes is None else scale_codes[..., part]
        pieces.append(tokenizer.decode(codes[..., part], list(channel_names), scale_codes=sc,
                                       normalize_phase=normalize_phase, noise_filling=noise_filling,
                                       generator=torch.Generator().manual_seed(start)).cpu())
    return torch.cat(pieces, dim=-1).numpy()


def to_raw(eeg_microvolts: np.ndarray, channel_names: Sequence[str], sampling_rate: float = SAMPLING_RATE):
    """[C, T] µV -> `mne.io.RawArray` in Volts, channel type EEG, conventional names (Fp1, Cz, ...)."""
    import mne

    info = mne.create_info([display_name(n) for n in channel_names], float(sampling_rate), ch_types="eeg")
    return mne.io.RawArray(np.asarray(eeg_microvolts, dtype=np.float64) * 1e-6, info, verbose=False)


RECORDING_OUTPUTS = (".edf", ".fif", ".fif.gz")  # what `save_raw` writes, by the extension
FIGURE_OUTPUTS = (".png", ".pdf", ".svg")  # what the plots are saved as (matplotlib, by the extension)
JSON_OUTPUTS = (".json",)
OUTPUT_FORMATS = {"recording": RECORDING_OUTPUTS, "figure": FIGURE_OUTPUTS, "json": JSON_OUTPUTS}


def _same_file(path: Path) -> str:
    """A key equal for two spellings of one file (relative or absolute, through symlinks, case on Windows)."""
    return os.path.normcase(str(Path(path).expanduser().resolve()))


def check_output_paths(outputs: dict, overwrite: bool = False, inputs: Sequence = ()) -> None:
    """Check all the outputs of one command against each other and against its inputs, then each on its own, before
    any work: a command must not write its EDF and then fail on its plot.

    `outputs` maps an option name (`--out`) to `(path or None, format)`, the format a key of `OUTPUT_FORMATS`
    (`"recording"`, `"figure"`, `"json"`), a tuple of allowed suffixes, or None (any). Two options naming one file,
    or an output that is one of `inputs`, is a `ValueError` naming both; then `check_output_path` checks each
    (suffix, an existing file without `overwrite`, a folder, a folder that cannot be written).
    """
    given = {option: path for option, (path, _) in outputs.items() if path}
    claimed: dict[str, str] = {}
    for option, path in given.items():
        other = claimed.setdefault(_same_file(path), option)
        if other != option:
            raise ValueError(f"{other} {given[other]} and {option} {path} are the same file: give each output its own "
                             "file name")
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and _same_file(source) in claimed:
            option = claimed[_same_file(source)]
            raise ValueError(f"{option} {given[option]} is the input recording: writing there would destroy it; "
                             "choose another output file")
    for option, (path, suffixes) in outputs.items():
        if path:
            suffixes = OUTPUT_FORMATS[suffixes] if isinstance(suffixes, str) else suffixes
            check_output_path(path, overwrite, inputs=inputs, suffixes=suffixes, option=option)


def check_output_path(path: str | Path, overwrite: bool = False, inputs: Sequence = (),
                      suffixes: Sequence[str] | None = None, option: str = "--out") -> Path:
    """Check an output file before any work (MNE's convention): an existing file is never replaced without
    `overwrite`, an input file never; the suffix must be one of `suffixes`; the folder must be writable.

    Raises `FileExistsError` (pass --overwrite / overwrite=True), `ValueError` (the input itself, a wrong
    suffix, a folder) or `PermissionError` (the folder cannot be written), each naming the path.
    """
    path = Path(path)
    if suffixes and not path.name.lower().endswith(tuple(suffixes)):
        raise ValueError(f"{option} {path} must end in {' or '.join(suffixes)}")
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and Path(source).exists() and path.exists() \
                and path.resolve() == Path(source).resolve():
            raise ValueError(f"{option} {path} is the input recording: writing there would destroy it; "
                             "choose another output file")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder: give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{option} {path} exists: pass --overwrite (overwrite=True in Python) to replace it, "
                              "or choose another file")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"{option} {path}: cannot write there ({folder} is not writable)")
    return path


def save_raw(raw, path: str | Path, overwrite: bool = False) -> Path:
    """Write a Raw as EDF (`.edf`, through edfio) or FIF (`.fif`, `.fif.gz`) chosen by the extension.

    An existing file is replaced only with `overwrite=True` (`FileExistsError` otherwise).
    """
    path = check_output_path(path, overwrite, suffixes=RECORDING_OUTPUTS, option="output")
    name = path.name.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".edf"):
        import mne

        mne.export.export_raw(str(path), raw, fmt="edf", overwrite=True, verbose=False)
    elif name.endswith((".fif", ".fif.gz")):
        if not name.endswith(("raw.fif", "raw.fif.gz", "_eeg.fif", "_eeg.fif.gz")):
            import warnings

            warnings.filterwarnings("ignore", message=".*does not conform to MNE naming conventions.*")
        raw.save(str(path), overwrite=True, verbose=False)
    else:
        raise ValueError(f"output {path} must end in .edf or .fif")
    return path
