"""NeuroRVQ EEG tokenizer: config, model, feature extractor and official-checkpoint conversion."""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from .channels import CHANNEL_VOCABULARY
from .configuration_neurorvq import NeuroRVQConfig
from .convert_official import convert_official_checkpoint, load_official
from .feature_extraction_neurorvq import NeuroRVQFeatureExtractor
from .loading import install_bundled_name_resolution, patch_disabled
from .modeling_neurorvq import (
    NeuroRVQEncoderOutput,
    NeuroRVQOutput,
    NeuroRVQSpectrumOutput,
    NeuroRVQTokenizer,
)

AutoConfig.register(NeuroRVQConfig.model_type, NeuroRVQConfig, exist_ok=True)
AutoModel.register(NeuroRVQConfig, NeuroRVQTokenizer, exist_ok=True)
AutoFeatureExtractor.register(NeuroRVQConfig, NeuroRVQFeatureExtractor, exist_ok=True)
# Bundled names (neurorvq/tokenizer-small, ...) resolve in our classes' from_pretrained whatever happens here. For
# transformers' Auto*.from_pretrained and pipeline() too, those are wrapped process-wide (loading.py): set
# NEURORVQ_NO_PATCH=1 to leave transformers untouched, or call loading.uninstall_bundled_name_resolution().
if not patch_disabled():
    install_bundled_name_resolution()

__all__ = [
    "CHANNEL_VOCABULARY",
    "NeuroRVQConfig",
    "NeuroRVQEncoderOutput",
    "NeuroRVQFeatureExtractor",
    "NeuroRVQOutput",
    "NeuroRVQSpectrumOutput",
    "NeuroRVQTokenizer",
    "convert_official_checkpoint",
    "load_official",
]
