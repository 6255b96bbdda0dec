"""Training and validation of the LBM on code datasets, through the project's one Accelerate core."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from neurorvq.tokenizer.trainer import TrainingArguments, build_model, train

from .configuration_lbm import LBMConfig
from .configuration_lbm_spatial import LBMSpatialConfig
from .data import code_loader, dataset_labels, load_codes
from .modeling_lbm import LBMForCausalLM
from .modeling_lbm_spatial import LBMForSpatialGeneration

# model_type -> (config class, model class): the LBMs `train_lbm` and `load_lbm` know
LBM_CLASSES = {LBMConfig.model_type: (LBMConfig, LBMForCausalLM),
               LBMSpatialConfig.model_type: (LBMSpatialConfig, LBMForSpatialGeneration)}


def lbm_config(config) -> LBMConfig:
    """An LBM config object, or a JSON path whose `model_type` picks the class (default `neurorvq-lbm`)."""
    if isinstance(config, LBMConfig):
        return config
    import json

    model_type = json.loads(Path(config).read_text()).get("model_type", LBMConfig.model_type)
    if model_type not in LBM_CLASSES:
        raise ValueError(f"{config}: model_type {model_type!r} is not an LBM ({', '.join(LBM_CLASSES)})")
    return LBM_CLASSES[model_type][0].from_json_file(str(config))


def lbm_class(config: LBMConfig):
    """The model class of an LBM config."""
    return LBM_CLASSES[config.model_type][1]


def load_lbm(name_or_path, **kwargs):
    """Any LBM (depth-wise / flattened or spatial) from a folder or bundled name, by its config's `model_type`."""
    from neurorvq.tokenizer.loading import resolve_model_path

    from .modeling_lbm import BUNDLED_MODELS

    folder = resolve_model_path(name_or_path, BUNDLED_MODELS)
    config_file = Path(folder) / "config.json" if isinstance(folder, Path) else None
    model_class = LBMForCausalLM
    if config_file is not None and config_file.is_file():
        model_class = lbm_class(lbm_config(config_file))
    return model_class.from_pretrained(name_or_path, **kwargs)  # both classes resolve bundled names and check folders


def to_model_device(batch: dict, model) -> dict:
    """A collated batch with its tensors on the model's device."""
    return {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def lbm_step(model, batch):
    return model(batch["positions"], batch["channel_ids"], batch["time_ids"], labels=True,
                 position_mask=batch["position_mask"], condition_ids=batch.get("condition_ids"))


def lbm_metrics(output) -> dict:
    return {"bits_per_code": float(output.loss.detach()) / math.log(2)}


@torch.no_grad()
def validation_nll(model, dataset, batch_size: int = 8, max_batches: int | None = None,
                   conditional: bool = False) -> dict:
    """Mean negative log-likelihood of the codes of a split: nats and bits per code, bits per position.

    Unconditional by default (comparable with count models that never see labels); `conditional=True` gives the
    model each window's own label (windows without a known label stay unconditional)."""
    loader = code_loader(dataset, batch_size, shuffle=False, max_positions=model.config.positions_per_context,
                         max_patches=model.config.max_patches,
                         condition_names=model.config.condition_names if conditional else None)
    total, codes, positions = 0.0, 0, 0
    generator_state = torch.get_rng_state()  # crops draw from the global RNG: leave training's untouched
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = to_model_device(batch, model)
        real = int(batch["position_mask"].sum())
        if real == 0:
            continue
        output = lbm_step(model, batch)
        streams = batch["positions"].shape[-1]
        total += float(output.loss) * real * streams
        codes += real * streams
        positions += real
    torch.set_rng_state(generator_state)
    nats = total / max(codes, 1)
    return {"nll_nats_per_code": nats, "bits_per_code": nats / math.log(2),
            "bits_per_position": nats / math.log(2) * codes / max(positions, 1)}


def train_lbm(config, codes_dir: str | Path, args: TrainingArguments, init_from: str | Path | None = None,
              eval_batches: int | None = 8):
    """Train an LBM ([`LBMForCausalLM`] or [`LBMForSpatialGeneration`], by the config's `model_type`) on a code
    dataset (`neurorvq tokenize`); returns (model, state)."""
    train_set, validation_set = load_codes(codes_dir, "train"), load_codes(codes_dir, "validation")
    if len(train_set) == 0:
        raise ValueError(f"{codes_dir} has no training window")
    if init_from is None:
        config = lbm_config(config)
        if config.condition_names is None:  # the conditions a fresh model learns: its training labels
            config.condition_names = dataset_labels(train_set)
        model_class = lbm_class(config)
    else:
        model_class = lbm_class(lbm_config(Path(init_from) / "config.json"))
    model = build_model(model_class, config, init_from, args.seed)
    if init_from is None and model.config.tokenizer_name_or_path:
        # a fresh model starts with the codes' geometry (see `init_code_embeddings`)
        from neurorvq.tokenizer import NeuroRVQTokenizer

        model.init_code_embeddings(NeuroRVQTokenizer.from_pretrained(model.config.tokenizer_name_or_path), args.seed)
    loader = code_loader(train_set, args.batch_size, shuffle=True, seed=args.seed, num_workers=args.num_workers,
                         max_positions=model.config.positions_per_context, max_patches=model.config.max_patches,
                         condition_names=model.config.condition_names,
                         condition_dropout=model.config.condition_dropout)
    eval_fn = (lambda m: validation_nll(m, validation_set, args.batch_size, eval_batches)) if len(validation_set) else None
    tokens = lambda batch: int(batch["position_mask"].sum()) * batch["positions"].shape[-1]  # noqa: E731
    state = train(model, loader, args, lbm_step, lbm_metrics, eval_fn, tokens)
    return model, state
