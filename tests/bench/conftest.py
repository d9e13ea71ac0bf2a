"""Shared fixtures of the harness tests: the bundled tokenizer, prompt text, and a stub server process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from bench_support import REPO, free_port, stop, wait_for

from bench.prompts import BUNDLED_TOKENIZER, PromptText, TextTokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer() -> TextTokenizer:
    return TextTokenizer(BUNDLED_TOKENIZER)


@pytest.fixture(scope="session")
def prompts(tiny_tokenizer: TextTokenizer) -> PromptText:
    return PromptText.from_files(tiny_tokenizer, None)


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    """``python -m bench.stub_server`` with a 20 ms TTFT and 5 ms between chunks."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.stub_server", "--port", str(port), "--ttft-ms", "20",
                                "--itl-ms", "5"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/v1/models", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
