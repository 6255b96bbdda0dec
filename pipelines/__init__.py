"""User-facing layer: Hugging Face pipelines (registered on import) and the `neurorvq` command line.

Tasks registered with `transformers.pipelines.PIPELINE_REGISTRY`:
    "eeg-generation"      EEGGenerationPipeline      (any LBM: LBMForSpatialGeneration or LBMForCausalLM, by its
                                                     config; default: the bundled neurorvq/lbm-small)
    "eeg-tokenization"    EEGTokenizationPipeline    (NeuroRVQTokenizer; default: bundled neurorvq/tokenizer-small)
    "eeg-reconstruction"  EEGReconstructionPipeline  (NeuroRVQTokenizer; default: bundled neurorvq/tokenizer-small)
"""

from transformers.pipelines import PIPELINE_REGISTRY

from transformers import AutoModelForCausalLM

import neurorvq.lbm  # noqa: F401  (registers both LBM classes with AutoModelForCausalLM)
from neurorvq.lbm.modeling_lbm import BUNDLED_MODELS as _BUNDLED_LBMS
from neurorvq.tokenizer import NeuroRVQTokenizer
from neurorvq.tokenizer.modeling_neurorvq import BUNDLED_MODELS as _BUNDLED_TOKENIZERS

from .eeg_generation import EEGGenerationPipeline, generate_codes
from .eeg_tokenization import EEGReconstructionPipeline, EEGTokenizationPipeline

# Defaults are the bundled folders (absolute paths), so `pipeline(task)` with no model works offline.
PIPELINE_REGISTRY.register_pipeline(
    "eeg-generation", pipeline_class=EEGGenerationPipeline, pt_model=AutoModelForCausalLM,
    default={"model": (str(_BUNDLED_LBMS["neurorvq/lbm-small"]), None)}, type="multimodal",
)
for _task, _class in (("eeg-tokenization", EEGTokenizationPipeline), ("eeg-reconstruction", EEGReconstructionPipeline)):
    PIPELINE_REGISTRY.register_pipeline(
        _task, pipeline_class=_class, pt_model=NeuroRVQTokenizer,
        default={"model": (str(_BUNDLED_TOKENIZERS["neurorvq/tokenizer-small"]), None)}, type="multimodal",
    )

__all__ = ["EEGGenerationPipeline", "EEGReconstructionPipeline", "EEGTokenizationPipeline", "generate_codes"]
