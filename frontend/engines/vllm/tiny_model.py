"""A tiny random-weight Qwen2 model directory for tests and demos of the vLLM worker.

``python -m frontend.engines.vllm.tiny_model OUT_DIR`` writes ``config.json`` (2 layers, hidden size 128), seeded random
weights (``model.safetensors``, about 2 MB) and the bundled model's tokenizer and chat template, so the
frontend and vLLM tokenize alike. vLLM's CPU build loads it in seconds; its output is nonsense, but
deterministic under greedy sampling, which is what the end-to-end tests compare. Needs torch and transformers
(both come with the ``vllm`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from ...config.options import BUNDLED_MODEL_PATH

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 32}


def make_tiny_model(out_dir: str, *, seed: int = 0, max_position_embeddings: int = 4096) -> str:
    """Write the model directory (replacing the files it writes) and return its absolute path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(BUNDLED_MODEL_PATH, "config.json"), encoding="utf-8") as handle:
        bundled = json.load(handle)
    config = Qwen2Config(vocab_size=bundled["vocab_size"], bos_token_id=bundled["bos_token_id"],
                         eos_token_id=bundled["eos_token_id"], max_position_embeddings=max_position_embeddings,
                         tie_word_embeddings=True, rope_theta=10000.0, torch_dtype="float32", **SHAPE)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:  # after saving: save_pretrained writes a generation_config.json of its own
        shutil.copyfile(os.path.join(BUNDLED_MODEL_PATH, name), os.path.join(out_dir, name))
    return os.path.abspath(out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m frontend.engines.vllm.tiny_model", description=__doc__)
    parser.add_argument("out_dir", help="Directory to write (created if missing).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
    parser.add_argument("--max-position-embeddings", type=int, default=4096, help="Context length.")
    args = parser.parse_args(argv)
    print(make_tiny_model(args.out_dir, seed=args.seed, max_position_embeddings=args.max_position_embeddings))


if __name__ == "__main__":
    main()
