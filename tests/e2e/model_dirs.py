"""Small model directories built in a test's temp dir: a word-level tokenizer with its own chat template,
so that a test can serve a second model whose tokenizer, template and limits differ from ``tiny``'s."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

from frontend.engines.mocker.corpus import CORPUS_PATH

WORDY_TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|> {{ m.content }} {% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>{% endif %}")
MARKERS = ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]


def make_wordy_model(directory: Path, *, context_length: int = 4096, template: str = WORDY_TEMPLATE) -> Path:
    """A word-level model: the mock corpus's words (so the mock generates real words), ``<bos>`` added in
    front of a prompt with special tokens, ``<eos>`` ending a sequence."""
    directory.mkdir(parents=True, exist_ok=True)
    words = sorted(set(re.findall(r"\w+|[^\w\s]+", Path(CORPUS_PATH).read_text(encoding="utf-8"))))
    vocab = {token: index for index, token in enumerate(["<unk>", "<bos>", "<eos>", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([AddedToken("<bos>", special=True), AddedToken("<eos>", special=True)])
    tokenizer.add_tokens([AddedToken(marker, special=False) for marker in MARKERS])
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tokenizer.save(str(directory / "tokenizer.json"))
    _write(directory / "tokenizer_config.json", {"chat_template": template, "bos_token": "<bos>",
                                                 "eos_token": "<eos>", "unk_token": "<unk>"})
    _write(directory / "config.json", {"max_position_embeddings": context_length})
    _write(directory / "generation_config.json", {"eos_token_id": 2})
    return directory


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
