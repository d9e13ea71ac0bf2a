"""A model's config and tokenizer files when its card's ``model_path`` is not a directory on this machine.

A worker on another machine registers the path it loaded the model from (or a Hugging Face repository id, as
vLLM takes one). The frontend needs only the small files (config, tokenizer, template), never the weights, and
fetches those with ``huggingface_hub`` into its cache, as Dynamo's frontend does: ``HF_HOME`` (where the cache
is), ``HF_TOKEN`` (gated models) and ``HF_HUB_OFFLINE=1`` (the cache only, no network) are honoured by the
library. The repository tried is the card's ``model_path`` when it has the shape of a repository id, then the
model's name. Neither working is a :class:`ModelFilesUnavailable` naming the model and what was tried.
"""

from __future__ import annotations

import os
import re

from ..protocol.errors import FrontendError

# the files the frontend reads (model_files.py, chat_template.py); weights and everything else stay remote
MODEL_FILE_PATTERNS = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                       "special_tokens_map.json", "chat_template.json", "*.jinja"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class ModelFilesUnavailable(FrontendError):
    """A model's files are neither on this machine nor obtainable from the hub (or its cache)."""


def is_repo_id(text: str) -> bool:
    """``org/name`` or ``name``, as the hub spells repositories (a filesystem path is not one)."""
    return bool(_REPO_ID.match(text)) and ".." not in text


def local_model_dir(model_path: str, model_name: str) -> str:
    """``model_path`` when it is a directory here, else the hub cache's copy of the model's small files
    (downloaded when missing, unless ``HF_HUB_OFFLINE`` is set). Blocking: call it off the event loop."""
    if os.path.isdir(model_path):
        return model_path
    repos = list(dict.fromkeys(r for r in (model_path, model_name) if is_repo_id(r)))
    problems = []
    for repo in repos:
        try:
            return _download(repo)
        except Exception as exc:  # the hub library's errors: offline miss, unknown repo, no network, gated
            problems.append(f"{repo}: {type(exc).__name__}: {exc}")
    tried = "; ".join(problems) if problems else "neither the path nor the name is a hub repository id"
    raise ModelFilesUnavailable(f"model {model_name!r}: {model_path!r} is not a directory on this machine, and "
                                f"its config and tokenizer files could not be had from the Hugging Face hub or "
                                f"its cache ({tried})")


def _download(repo: str) -> str:
    from huggingface_hub import snapshot_download  # only for models whose files are not local

    path = snapshot_download(repo, allow_patterns=MODEL_FILE_PATTERNS)
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise FileNotFoundError("the repository has no tokenizer.json")
    return path
