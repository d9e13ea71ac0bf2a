"""`python -m frontend.vllm`: the vLLM worker (frontend/engines/vllm/)."""
