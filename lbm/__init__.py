"""NeuroRVQ large brainwave models: decoder-only transformers that model (and generate) tokenizer codes."""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_lbm import LBMConfig
from .layout import (
    CodeLayout,
    channel_and_time_ids,
    codes_to_positions,
    flat_to_positions,
    positions_to_codes,
    positions_to_flat,
    stream_offsets,
)
from .configuration_lbm_spatial import LBMSpatialConfig
from .modeling_lbm import LBMCache, LBMForCausalLM, LBMOutput, LBMPreTrainedModel, sample_logits
from .modeling_lbm_spatial import LBMForSpatialGeneration, LBMSpatialOutput

AutoConfig.register(LBMConfig.model_type, LBMConfig, exist_ok=True)
AutoModelForCausalLM.register(LBMConfig, LBMForCausalLM, exist_ok=True)
AutoConfig.register(LBMSpatialConfig.model_type, LBMSpatialConfig, exist_ok=True)
AutoModelForCausalLM.register(LBMSpatialConfig, LBMForSpatialGeneration, exist_ok=True)

__all__ = [
    "CodeLayout",
    "LBMCache",
    "LBMConfig",
    "LBMForCausalLM",
    "LBMForSpatialGeneration",
    "LBMSpatialConfig",
    "LBMSpatialOutput",
    "LBMOutput",
    "LBMPreTrainedModel",
    "channel_and_time_ids",
    "codes_to_positions",
    "flat_to_positions",
    "positions_to_codes",
    "positions_to_flat",
    "sample_logits",
    "stream_offsets",
]
