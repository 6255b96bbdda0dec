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
from .modeling_lbm import LBMCache, LBMForCausalLM, LBMOutput, LBMPreTrainedModel, sample_logits

AutoConfig.register(LBMConfig.model_type, LBMConfig, exist_ok=True)
AutoModelForCausalLM.register(LBMConfig, LBMForCausalLM, exist_ok=True)

__all__ = [
    "CodeLayout",
    "LBMCache",
    "LBMConfig",
    "LBMForCausalLM",
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
