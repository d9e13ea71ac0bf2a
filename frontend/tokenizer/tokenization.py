"""The work of tokenization: a chat request's template rendered and tokenized, or a completion prompt tokenized,
with the prompt's KV block hashes. The pool processes (``server.py``) run it, and so does a gateway for short
requests (``client.py``: ``--tokenize-inline-max-bytes``).

Models are loaded on first use from the request's ``model_path`` and kept (tokenizer + compiled template).
A template or decoding problem is answered with an error message for a 400.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from tokenizers import Tokenizer

from ..kv import block_hashes
from ..protocol import tokenizer as wire
from ..protocol.errors import FrontendError, TemplateError
from ..protocol.limits import depth_problem
from .chat_template import ChatTemplate
from .fast_bpe import fast_encoder
from .model_files import load_tokenizer
from .parallel_encode import PARALLEL_MIN_CHARS, parallel_encoder

log = logging.getLogger(__name__)


class ChatTemplateInput(msgspec.Struct):
    """The part of a chat request the template needs; the gateway already validated the full request."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    documents: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False


class CompletionPromptInput(msgspec.Struct):
    """A completion request's prompt (the gateway sends only single-string prompts here)."""

    prompt: str
    add_special_tokens: bool = True  # vLLM's field; /tokenize sends it


_chat_decoder = msgspec.json.Decoder(ChatTemplateInput)
_prompt_decoder = msgspec.json.Decoder(CompletionPromptInput)


class LoadedModel:
    """Tokenizer and chat template of one model directory."""

    def __init__(self, model_path: str, *, release_gil: bool, fast_bpe: bool = True) -> None:
        self.tokenizer: Tokenizer = load_tokenizer(model_path)
        self.template = ChatTemplate.from_model_dir(model_path)
        self.release_gil = release_gil
        # byte-level BPE by tiktoken (fast_bpe.py), when it gives this tokenizer's ids; it adds no special tokens,
        # so a text that asks for them takes it only when the post-processor adds none
        self.fast_encode = fast_encoder(self.tokenizer) if fast_bpe else None
        self.adds_special_tokens = self.tokenizer.encode("a").ids != self.tokenizer.encode(
            "a", add_special_tokens=False).ids
        # otherwise a pool process (its only Python thread) encodes long texts on several cores, when cutting is
        # exact
        self.parallel_encode = parallel_encoder(self.tokenizer) if release_gil and self.fast_encode is None else None

    def chat_prompt_ids(self, body: bytes) -> list[int]:
        request = _chat_decoder.decode(body)
        if self.template is None:
            raise TemplateError("Chat template error: this model has no chat template; use /v1/completions")
        tools = None if request.tool_choice == "none" else request.tools
        prompt = self.template.render(
            request.messages, tools=tools, documents=request.documents,
            add_generation_prompt=request.add_generation_prompt and not request.continue_final_message,
            continue_final_message=request.continue_final_message,
            chat_template_kwargs=request.chat_template_kwargs,
        )
        return self._encode(prompt, False)

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        if self.fast_encode is not None and not (add_special_tokens and self.adds_special_tokens):
            return self.fast_encode(text)
        if self.parallel_encode is not None and not add_special_tokens and len(text) >= PARALLEL_MIN_CHARS:
            return self.parallel_encode(text)
        if self.release_gil:  # the batch call without offsets: the same ids as encode(), 15-40 % sooner
            return self.tokenizer.encode_batch_fast([text], add_special_tokens=add_special_tokens)[0].ids
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def completion_prompt_ids(self, body: bytes) -> list[int]:
        request = _prompt_decoder.decode(body)
        return self._encode(request.prompt, request.add_special_tokens)


class Tokenization:
    """Answers TokenizeRequests; models are cached by path.

    ``release_gil``: tokenize with the batch call, which is faster but releases the GIL. Right for a pool process,
    whose only Python thread it is; wrong in an HTTP process, where getting the GIL back from Granian's runtime
    thread costs milliseconds under load (measured: 1.2-3 ms a call against a busy thread, 40 µs with
    ``encode``). ``fast_bpe`` (``--fast-bpe``): encode with tiktoken where it gives the same ids (``fast_bpe.py``);
    that also releases the GIL, but for a few microseconds on a short prompt, and measured faster under load."""

    def __init__(self, *, release_gil: bool, fast_bpe: bool = True) -> None:
        self.release_gil = release_gil
        self.fast_bpe = fast_bpe
        self.models: dict[str, LoadedModel] = {}

    def loaded(self, model_path: str) -> bool:
        return model_path in self.models

    def model(self, model_path: str) -> LoadedModel:
        loaded = self.models.get(model_path)
        if loaded is None:
            loaded = self.models[model_path] = LoadedModel(model_path, release_gil=self.release_gil,
                                                                  fast_bpe=self.fast_bpe)
        return loaded

    def handle(self, request: wire.TokenizeRequest) -> wire.TokenizeResult:
        try:
            model = self.model(request.model_path)
            if request.kind == "chat":
                ids = model.chat_prompt_ids(request.body)
            else:
                ids = model.completion_prompt_ids(request.body)
            hashes = block_hashes(ids, request.block_size).tobytes() if request.block_size > 0 else b""
        except (FrontendError, msgspec.DecodeError) as exc:
            return wire.TokenizeResult(request.request_id, error=str(exc))
        except RecursionError:  # a value nested too deeply for the template (the gateway refuses > 128 levels)
            return wire.TokenizeResult(request.request_id, error=depth_problem("the request"))
        except Exception as exc:  # a model directory we cannot read: report, keep serving
            log.exception("tokenization failed", extra={"model_path": request.model_path})
            return wire.TokenizeResult(request.request_id, error=f"tokenization failed: {exc}")
        return wire.TokenizeResult(request.request_id, ids, hashes)
