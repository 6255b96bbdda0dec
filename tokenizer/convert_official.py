"""Convert a released NeuroRVQ checkpoint (official key names) into a `NeuroRVQTokenizer` folder.

The config is inferred from tensor shapes (depths, widths, heads, kernels, n_code, code_dim, stages);
every released tensor maps onto exactly one tensor of this implementation (the decoder's 1x1 convs
become linears: same numbers, squeezed shape).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .channels import CHANNEL_VOCABULARY
from .configuration_neurorvq import NeuroRVQConfig
from .modeling_neurorvq import NeuroRVQTokenizer

_HEADS = {"amplitude": "amplitude_head", "angle_sin": "phase_sin_head", "angle_cos": "phase_cos_head"}
_CODEBOOK = {
    "cluster_size": "usage",
    "embedding.weight": "codebook",
    "embedding.cluster_size": "ema_count",
    "embedding.embed_avg": "ema_sum",
    "embedding.initted": "initialized",
}
_RULES: list[tuple[re.Pattern, callable]] = [
    (re.compile(r"^(encoder|decoder)\.cls_token$"), lambda m: f"{m[1]}.transformer.cls_token"),
    (re.compile(r"^(encoder|decoder)\.pos_embed$"), lambda m: f"{m[1]}.transformer.spatial_embed"),
    (re.compile(r"^(encoder|decoder)\.time_embed$"), lambda m: f"{m[1]}.transformer.temporal_embed"),
    (re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$"), lambda m: f"{m[1]}.transformer.layers.{m[2]}.{m[3]}"),
    (re.compile(r"^(encoder|decoder)\.fc_norm_(\d+)\.(weight|bias)$"),
     lambda m: f"{m[1]}.transformer.scale_norms.{int(m[2]) - 1}.{m[3]}"),
    (re.compile(r"^encoder\.patch_embed\.(conv|norm)(\d+)_(\d+)\.(weight|bias)$"),
     lambda m: f"encoder.branches.{int(m[3]) - 1}.{m[1]}s.{int(m[2]) - 1}.{m[4]}"),
    (re.compile(r"^encode_task_layer_(\d+)\.(\d+)\.(weight|bias)$"),
     lambda m: f"encoder.to_code.{int(m[1]) - 1}.{m[2]}.{m[3]}"),
    (re.compile(r"^decoder\.patch_embed_(\d+)\.proj\.(weight|bias)$"),
     lambda m: f"decoder.code_embed.{int(m[1]) - 1}.{m[2]}"),
    (re.compile(r"^decode_task_layer_(amplitude|angle_sin|angle_cos)\.(\d+)\.(weight|bias)$"),
     lambda m: f"decoder.{_HEADS[m[1]]}.{m[2]}.{m[3]}"),
    (re.compile(r"^quantize_(\d+)\.layers\.(\d+)\.(cluster_size|embedding\.weight|embedding\.cluster_size|"
                r"embedding\.embed_avg|embedding\.initted)$"),
     lambda m: f"quantizers.{int(m[1]) - 1}.stages.{m[2]}.{_CODEBOOK[m[3]]}"),
]


def convert_official_key(key: str) -> str:
    """Released state-dict key -> this implementation's key (`ValueError` for an unknown key)."""
    for pattern, rename in _RULES:
        match = pattern.match(key)
        if match:
            return rename(match)
    raise ValueError(f"unrecognised key in the official checkpoint: {key!r}")


def config_from_official_shapes(shapes: dict[str, tuple[int, ...]], **overrides) -> NeuroRVQConfig:
    """Infer a [`NeuroRVQConfig`] from the released key names and shapes."""

    def count(pattern: str) -> int:
        return len({m[1] for k in shapes if (m := re.match(pattern, k))})

    try:
        hidden = shapes["encoder.pos_embed"][1]
        vocabulary_size = shapes["encoder.pos_embed"][0] - 1
        head_dim = shapes["encoder.blocks.0.attn.q_norm.weight"][0]
        num_scales = count(r"^encoder\.fc_norm_(\d+)\.")
        stages = count(r"^encoder\.patch_embed\.conv(\d+)_1\.weight$")
        kernel_sizes = [[shapes[f"encoder.patch_embed.conv{s}_{b}.weight"][-1] for s in range(1, stages + 1)]
                        for b in range(1, num_scales + 1)]
        codebook_size, code_dim = shapes["quantize_1.layers.0.embedding.weight"]
        config = dict(
            max_patches=shapes["encoder.time_embed"][0],
            hidden_size=hidden,
            num_attention_heads=hidden // head_dim,
            mlp_ratio=shapes["encoder.blocks.0.mlp.fc1.weight"][0] / hidden,
            encoder_layers=count(r"^encoder\.blocks\.(\d+)\."),
            decoder_layers=count(r"^decoder\.blocks\.(\d+)\."),
            conv_channels=shapes["encoder.patch_embed.conv1_1.weight"][0],
            conv_kernel_sizes=kernel_sizes,
            codebook_size=codebook_size,
            code_dim=code_dim,
            num_quantizers=count(r"^quantize_1\.layers\.(\d+)\."),
            quantizer_type="official",
        )
    except KeyError as error:
        raise ValueError(f"not a NeuroRVQ tokenizer checkpoint: missing {error}") from error
    if vocabulary_size != len(CHANNEL_VOCABULARY) and "channel_vocabulary" not in overrides:
        raise ValueError(f"the checkpoint's spatial table has {vocabulary_size} channels, the released vocabulary "
                         f"{len(CHANNEL_VOCABULARY)}: pass channel_vocabulary= with its names")
    config.update(overrides)
    return NeuroRVQConfig(**config)


def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a released state dict: `.safetensors`, or `.pt`/`.pth`/`.bin` via `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state_dict = load_file(str(path))
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any reader failure means an unreadable checkpoint
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    for wrapper in ("model", "state_dict", "module"):  # training checkpoints nest the weights
        if isinstance(state_dict, dict) and wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state_dict


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], **config_overrides):
    """Released state dict -> (`NeuroRVQConfig`, state dict with this implementation's keys)."""
    config = config_from_official_shapes({k: tuple(v.shape) for k, v in state_dict.items()}, **config_overrides)
    converted = {}
    for key, tensor in state_dict.items():
        new_key = convert_official_key(key)
        if new_key in converted:
            raise ValueError(f"two official keys map onto {new_key!r}")
        if re.match(r"^decoder\.patch_embed_\d+\.proj\.weight$", key):
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])  # 1x1 conv -> linear
        converted[new_key] = tensor.float()
    return config, converted


def load_official(path: str | Path, **config_overrides) -> NeuroRVQTokenizer:
    """A `NeuroRVQTokenizer` (eval mode) holding a released checkpoint; every key must match."""
    config, state_dict = convert_official_state_dict(load_official_state_dict(path), **config_overrides)
    model = NeuroRVQTokenizer(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the inferred config: missing {missing}, unexpected {unexpected}")
    return model.eval()


def convert_official_checkpoint(path: str | Path, output_dir: str | Path, **config_overrides) -> Path:
    """Write a `from_pretrained` folder (config.json + model.safetensors) from a released checkpoint."""
    model = load_official(path, **config_overrides)
    model.save_pretrained(output_dir)
    return Path(output_dir)
