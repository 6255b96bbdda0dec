"""Prepared EEG windows -> code datasets (batched `datasets.map` through a tokenizer), and LBM batches.

A code row holds one window: `codes` [S][K][C][A] int16, `scale_codes` [2][C][A] int16 (empty without scale
tokens), `channel_indices` [C], `valid_patches` (patches holding real samples), plus the window's
`channel_names`, `recording_id`, `subject_id` and `label` (`""` = unlabelled).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from neurorvq.tokenizer.data import ShapeBucketBatchSampler, load_split

from .layout import channel_and_time_ids, codes_to_positions


# Written last by `tokenize_dataset`: its presence (with the right fingerprint) marks a complete, reusable save.
_TOKENIZE_MANIFEST = "tokenize_manifest.json"


def _prepared_fingerprint(folder: Path) -> str:
    """The prepared dataset's own fingerprint (its inputs' bytes and settings), from `neurorvq prepare`."""
    manifest = folder / "prepare_manifest.json"
    if not manifest.is_file():
        raise ValueError(f"{folder} is not a prepared dataset (run `neurorvq prepare` first)")
    return json.loads(manifest.read_text())["fingerprint"]


def tokenize_dataset(data_dir: str | Path, tokenizer, output_dir: str | Path, batch_size: int = 16,
                     tokenizer_fingerprint: str | None = None) -> dict:
    """Encode every window of a prepared dataset (`neurorvq prepare`) into codes with `datasets.map`.

    The windows' `channel_names`, `recording_id`, `subject_id` and `label` (`""` when the prepared data has none)
    are carried into the code rows. The map streams: it reads the memory-mapped prepared split and writes the codes
    to a scratch folder beside `output_dir` (removed at the end), so memory does not grow with the corpus.
    The result is cached: re-running with the same prepared data and tokenizer reuses `output_dir`;
    a different tokenizer or different data rebuilds it. Returns `{"reused_cache", "windows"}`.
    """
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    fingerprint = hashlib.sha256(
        (_prepared_fingerprint(data_dir) + (tokenizer_fingerprint or _model_fingerprint(tokenizer))).encode()
    ).hexdigest()
    manifest_path = output_dir / _TOKENIZE_MANIFEST
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("fingerprint") == fingerprint:
        return {"reused_cache": True, **json.loads(manifest_path.read_text())}

    tokenizer = tokenizer.eval()
    windows = _write_codes(data_dir, tokenizer, output_dir, batch_size, fingerprint)
    manifest = {"fingerprint": fingerprint, "windows": windows,
                "tokenizer": getattr(tokenizer, "name_or_path", ""), "codebook_size": tokenizer.config.codebook_size,
                "num_scales": tokenizer.config.num_scales, "num_quantizers": tokenizer.config.num_quantizers,
                "num_scale_tokens": tokenizer.config.num_scale_tokens if tokenizer.uses_scale_tokens else 0}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return {"reused_cache": False, **manifest}


def _code_features():
    """The `datasets.Features` of a code row (see the module docstring)."""
    import datasets

    return datasets.Features({
        "codes": datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("int16"))))),
        "scale_codes": datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("int16")))),
        "channel_indices": datasets.Sequence(datasets.Value("int32")),
        "valid_patches": datasets.Value("int32"),
        "channel_names": datasets.Sequence(datasets.Value("string")),
        "recording_id": datasets.Value("string"),
        "subject_id": datasets.Value("string"),
        "label": datasets.Value("string"),
    })


def _write_codes(data_dir: Path, tokenizer, output_dir: Path, batch_size: int, fingerprint: str) -> dict[str, int]:
    """Encode every split of the prepared dataset at `data_dir` and save the codes as a `DatasetDict` to
    `output_dir` (its old manifest removed first); the maps write to a scratch folder, removed at the end.
    Returns the windows per split."""
    import datasets

    prepared = datasets.load_from_disk(str(data_dir))
    features = _code_features()
    encode = functools.partial(_encode_batch, tokenizer=tokenizer)
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tokenize-", dir=output_dir.resolve().parent))
    try:
        with torch.no_grad():
            coded = datasets.DatasetDict({
                name: _encode_split(split, name, encode, features, batch_size, fingerprint, scratch)
                for name, split in prepared.items()
            })
        (output_dir / _TOKENIZE_MANIFEST).unlink(missing_ok=True)  # a rebuild: an interrupted save is never reused
        coded.save_to_disk(str(output_dir), num_shards={name: 1 for name, split in coded.items() if len(split) == 0})
        windows = {k: len(v) for k, v in coded.items()}
        del coded
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return windows


def _encode_split(split, name: str, encode, features, batch_size: int, fingerprint: str, scratch: Path):
    """The code rows of one prepared split: `encode` mapped over each of its Arrow files in turn, into `scratch`."""
    import datasets

    if len(split) == 0:  # an empty split (no validation subject) maps to nothing: code columns all the same
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    # one Arrow file of the prepared split at a time: a memory-mapped file's pages count in the
    # process's resident memory until it is closed, so mapping the whole split at once grows with it
    files = [f["filename"] for f in split.cache_files]
    parts = [split] if len(files) < 2 else (datasets.Dataset.from_file(f) for f in files)
    pieces = []
    for index, part in enumerate(parts):
        if "label" not in part.column_names:  # prepared before labels existed
            part = part.add_column("label", [""] * len(part))
        pieces.append(part.map(
            encode, batched=True, batch_size=batch_size, features=features,
            remove_columns=[c for c in part.column_names if c not in features],
            new_fingerprint=f"{fingerprint[:32]}-{name}-{index}", desc=f"tokenizing {name}",
            load_from_cache_file=False,
            cache_file_name=str(scratch / f"{name}-{index}.arrow"),  # written as it goes; saved by _write_codes
        ))
        del part
    return pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)


def _encode_batch(batch: dict, tokenizer) -> dict:
    """`datasets.map` function: the code columns of a batch of prepared windows (lists, one entry per window)."""
    patch = tokenizer.config.patch_size
    rows = len(batch["valid_samples"])
    out = {"codes": [None] * rows, "scale_codes": [None] * rows, "channel_indices": [None] * rows,
           "valid_patches": [None] * rows}
    # windows of one map batch may differ in shape: encode equal shapes together
    groups: dict[tuple, list[int]] = {}
    for i, values in enumerate(batch["input_values"]):
        groups.setdefault((len(values), len(values[0]), tuple(batch["channel_names"][i])), []).append(i)
    for (channels, samples, names), indices in groups.items():
        x = torch.tensor(np.stack([np.asarray(batch["input_values"][i], dtype=np.float32) for i in indices]))
        mask = torch.zeros_like(x, dtype=torch.long)
        for row, i in enumerate(indices):
            mask[row, :, : batch["valid_samples"][i]] = 1
        encoded = tokenizer.encode(x, list(names), padding_mask=mask)
        channel_indices = tokenizer.channel_indices(list(names), 1, channels)[0].tolist()
        for row, i in enumerate(indices):
            out["codes"][i] = encoded.codes[row].to(torch.int16).numpy()
            out["scale_codes"][i] = (encoded.scale_codes[row].to(torch.int16).numpy() if encoded.scale_codes is not None
                                     else np.zeros((0, channels, samples // patch), dtype=np.int16))
            out["channel_indices"][i] = channel_indices
            out["valid_patches"][i] = -(-int(batch["valid_samples"][i]) // patch)
    return out


def _model_fingerprint(model) -> str:
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def dataset_labels(dataset) -> list[str]:
    """The distinct non-empty `label`s of a code (or prepared) dataset, sorted; [] when it has no `label` column."""
    if "label" not in dataset.column_names:
        return []
    return sorted({label for label in dataset.unique("label") if label})


def load_codes(path: str | Path, split: str | None = None):
    """A code dataset written by `tokenize_dataset` (or one split of it), formatted as numpy."""
    return load_split(path, split, "tokenize_manifest.json", "neurorvq tokenize",
                      ["codes", "scale_codes", "channel_indices", "valid_patches"])


def code_shapes(dataset) -> list[tuple[int, int]]:
    """(channels, patches) of every code window, from Arrow offsets."""
    import pyarrow.compute as pc

    column = dataset.with_format(None).data.column("codes")
    stage = pc.list_element(pc.list_element(column, 0), 0)  # [C][A] of scale 0 stage 0
    return list(zip(pc.list_value_length(stage).to_pylist(),
                    pc.list_value_length(pc.list_element(stage, 0)).to_pylist()))


def collate_codes(rows: list[dict], max_positions: int | None = None, max_patches: int | None = None,
                  generator: torch.Generator | None = None, condition_names: list[str] | None = None,
                  condition_dropout: float = 0.0) -> dict:
    """Code windows of one shape -> LBM inputs: `positions` [B, P, M], `channel_ids`/`time_ids`/`position_mask` [B, P]
    and `condition_ids` [B].

    `condition_ids`: 1 + the index of a row's `label` in `condition_names`; 0 (unconditional) for rows without a
    label, with a label outside `condition_names`, or when `condition_names` is None; with `condition_dropout`, that
    share of the labelled rows is set to 0 as well (drawn like the crop: see below).

    With `max_positions` (and `max_patches`, the time-embedding size), longer windows are cropped to a random run
    of whole real patches (time ids re-based to 0), the same run for the whole batch. The crop draws from
    `generator`; else from a generator seeded by the rows' `crop_seed` (set per batch by `code_loader`, so that
    crops do not depend on the global RNG nor on how far the DataLoader prefetched: exact resume); else from
    torch's global RNG.
    """
    codes = torch.as_tensor(np.stack([np.asarray(r["codes"], dtype=np.int64) for r in rows]))
    scales = np.stack([np.asarray(r["scale_codes"], dtype=np.int64) for r in rows])
    scale_codes = torch.as_tensor(scales) if scales.shape[1] else None
    channel_indices = torch.as_tensor(np.stack([np.asarray(r["channel_indices"], dtype=np.int64) for r in rows]))
    num_channels, num_patches = codes.shape[-2], codes.shape[-1]
    positions = codes_to_positions(codes, scale_codes)
    channel_ids, time_ids = channel_and_time_ids(channel_indices, num_patches)
    valid = torch.as_tensor([int(r["valid_patches"]) for r in rows])
    position_mask = (time_ids < valid[:, None]).long()  # time-major: position p is patch p // C
    patches = num_patches
    if max_positions is not None:
        patches = min(patches, max(1, max_positions // num_channels))
    if max_patches is not None:
        patches = min(patches, max_patches)
    if patches < num_patches:
        last_start = max(0, min(num_patches - patches, int(valid.min()) - patches))  # crops hold real patches
        if generator is None and rows and "crop_seed" in rows[0]:
            generator = torch.Generator().manual_seed(int(rows[0]["crop_seed"]))
        start = int(torch.randint(0, last_start + 1, (1,), generator=generator))
        keep = slice(start * num_channels, (start + patches) * num_channels)
        positions, channel_ids, position_mask = positions[:, keep], channel_ids[:, keep], position_mask[:, keep]
        time_ids = time_ids[:, keep] - start
    condition_ids = torch.tensor([condition_names.index(r["label"]) + 1 if condition_names and r.get("label") in
                                  condition_names else 0 for r in rows], dtype=torch.long)
    if condition_dropout > 0:
        if rows and "crop_seed" in rows[0]:  # its own stream: drop-outs do not move the crops
            dropout_generator = torch.Generator().manual_seed(int(rows[0]["crop_seed"]) ^ 0x5DEECE66D)
        else:
            dropout_generator = generator
        drop = torch.rand(len(rows), generator=dropout_generator) < condition_dropout
        condition_ids = condition_ids.masked_fill(drop, 0)
    return {"positions": positions, "channel_ids": channel_ids, "time_ids": time_ids, "position_mask": position_mask,
            "num_channels": num_channels, "condition_ids": condition_ids}


class SeededBatchSampler(torch.utils.data.Sampler):
    """A batch sampler whose batches carry a seed: yields `[(index, batch_seed), ...]`.

    The seed is a function of (seed, epoch, position of the batch in the epoch) only, so the random crop of a
    batch is the same whether the epoch ran through or was resumed after `skip_first_batches`.
    """

    def __init__(self, batch_sampler: ShapeBucketBatchSampler):
        self.batch_sampler = batch_sampler

    @property
    def epoch(self) -> int:
        return self.batch_sampler.epoch

    @property
    def batch_size(self) -> int:
        return self.batch_sampler.batch_size

    @property
    def drop_last(self) -> bool:
        return self.batch_sampler.drop_last

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        base = (self.batch_sampler.seed * 1_000_003 + self.batch_sampler.epoch) * 1_000_003
        for position, batch in enumerate(self.batch_sampler):
            batch_seed = (base + position) % (2**63)
            yield [(index, batch_seed) for index in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class _SeededRows(torch.utils.data.Dataset):
    """Rows of a dataset looked up by `(index, batch_seed)` keys; each row gets the batch's `crop_seed`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, batch_seed = key
        return {**self.dataset[int(index)], "crop_seed": batch_seed}

    def __getitems__(self, keys):
        indices = [int(index) for index, _ in keys]
        rows = self.dataset.__getitems__(indices) if hasattr(self.dataset, "__getitems__") else \
            [self.dataset[i] for i in indices]
        return [{**row, "crop_seed": batch_seed} for row, (_, batch_seed) in zip(rows, keys)]


def code_loader(dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                max_positions: int | None = None, max_patches: int | None = None,
                condition_names: list[str] | None = None, condition_dropout: float = 0.0):
    """Shape-bucketed batches of code windows (see `collate_codes`).

    Neither the crops nor the creation of an iterator draw from torch's global RNG (exact training resume).
    """
    from functools import partial

    sampler = SeededBatchSampler(ShapeBucketBatchSampler(code_shapes(dataset), batch_size, shuffle=shuffle, seed=seed))
    return torch.utils.data.DataLoader(_SeededRows(dataset), batch_sampler=sampler, num_workers=num_workers,
                                       generator=torch.Generator().manual_seed(seed),
                                       collate_fn=partial(collate_codes, max_positions=max_positions, max_patches=max_patches,
                                                          condition_names=condition_names,
                                                          condition_dropout=condition_dropout))


__all__ = ["tokenize_dataset", "dataset_labels", "load_codes", "code_shapes", "collate_codes", "code_loader"]
