"""Run by tests/test_training.py under torchrun with 2 CPU processes (gloo): train a few steps, then every
rank writes its codebook buffers and parameters so the test can compare them across ranks."""

import sys

from accelerate import PartialState
from safetensors.torch import save_file

from neurorvq.tokenizer import NeuroRVQConfig
from neurorvq.tokenizer.trainer import TrainingArguments
from neurorvq.tokenizer.training import train_tokenizer

config_path, data_dir, output_dir = sys.argv[1:4]

config = NeuroRVQConfig.from_json_file(config_path)
config.quantizer_type, config.dead_code_threshold = "standard", 0.5  # exercise EMA sums, counts and restarts
args = TrainingArguments(output_dir=output_dir, max_steps=4, batch_size=2, warmup_steps=1, save_steps=100,
                         eval_steps=100, logging_steps=1, progress=False)
model, state = train_tokenizer(config, data_dir, args)
distributed = PartialState()  # set up by the trainer's Accelerator (MULTI_CPU, gloo)
assert distributed.num_processes == 2, f"expected 2 processes, got {distributed.num_processes}"
rank = distributed.process_index
tensors = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
save_file(tensors, f"{output_dir}/rank{rank}.safetensors")
