"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's shapes, as Dynamo serves them).

Tokenizing goes through the tokenizer pool, so that ``messages`` are rendered with the chat template exactly
as a chat request's are; detokenizing uses the HTTP process's own copy of the model's tokenizer.
"""

from __future__ import annotations

import msgspec

from ..gateway.discovery import ServedModel
from ..gateway.state import Gateway
from ..protocol.errors import InvalidRequest
from ..protocol.tokenize_api import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from .reply import send_json
from .streaming import decode_request

_tokenize_decoder = msgspec.json.Decoder(TokenizeRequest)
_detokenize_decoder = msgspec.json.Decoder(DetokenizeRequest)


async def tokenize(gateway: Gateway, scope, proto, body: bytes) -> None:
    """``{model, prompt | messages}`` -> ``{count, max_model_len, tokens[, token_strs]}``."""
    request: TokenizeRequest = decode_request(_tokenize_decoder, body)
    if (request.prompt is None) == (request.messages is None):
        raise InvalidRequest("give exactly one of prompt and messages", param="prompt")
    model = _model(gateway, request.model)
    path = model.files_path
    if request.messages is not None:
        if request.add_special_tokens:
            raise InvalidRequest("add_special_tokens with messages is not supported (the chat template adds "
                                 "the special tokens)", param="add_special_tokens")
        tokens, _ = await gateway.tokenizer.tokenize(path, "chat", body, 0)
    else:
        add_special = request.add_special_tokens is not False
        prompt_body = msgspec.json.encode({"prompt": request.prompt, "add_special_tokens": add_special})
        tokens, _ = await gateway.tokenizer.tokenize(path, "completion", prompt_body, 0)
    assert model.tokenizer is not None
    strs = [model.tokenizer.id_to_token(token) or "" for token in tokens] if request.return_token_strs else None
    send_json(proto, 200, TokenizeResponse(len(tokens), model.card.context_length, tokens, strs))


async def detokenize(gateway: Gateway, scope, proto, body: bytes) -> None:
    """``{model, tokens}`` -> ``{prompt}`` (special tokens kept)."""
    request: DetokenizeRequest = decode_request(_detokenize_decoder, body)
    model = _model(gateway, request.model)
    assert model.tokenizer is not None
    vocab_size = model.tokenizer.get_vocab_size()
    if request.tokens and max(request.tokens) >= vocab_size:
        raise InvalidRequest(f"token id {max(request.tokens)} is outside the vocabulary (size {vocab_size})",
                             param="tokens")
    send_json(proto, 200, DetokenizeResponse(model.tokenizer.decode(request.tokens, skip_special_tokens=False)))


def _model(gateway: Gateway, name: str | None) -> ServedModel:
    """The named model (404 unknown, 400 without a tokenizer), or the only model with a tokenizer."""
    if name is None:
        candidates = [model for model in gateway.models.models.values() if model.tokenizer is not None]
        if len(candidates) != 1:
            raise InvalidRequest(f"model is required ({len(candidates)} served models have a tokenizer)",
                                 param="model")
        return candidates[0]
    model = gateway.model(name)
    if model.tokenizer is None:
        raise InvalidRequest(f"model `{model.name}` has no tokenizer (it serves "
                             f"{', '.join(model.card.model_types)})", param="model")
    return model
