"""Chat-template rendering compatible with Hugging Face transformers' ``apply_chat_template``.

The template is compiled once, in a sandboxed Jinja environment configured the way transformers configures it
(``trim_blocks``, ``lstrip_blocks``, loop controls, the ``{% generation %}`` tag, ``raise_exception``,
``strftime_now`` and a ``tojson`` filter that does not HTML-escape). Rendering never copies the messages: they are
handed to the template as given, content strings and content-part lists alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .template_files import collect_templates, read_json_object
from frontend.protocol.errors import ConfigError, TemplateError

__all__ = ["ERROR_PREFIX", "SPECIAL_TOKEN_NAMES", "ChatTemplate"]

ERROR_PREFIX = "Chat template error: "
SPECIAL_TOKEN_NAMES: tuple[str, ...] = ("bos_token", "eos_token", "pad_token", "unk_token")
# Render variables that the request sets through their own fields; chat_template_kwargs may not replace them.
_RESERVED_KWARGS = frozenset({"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"})
# Exceptions a template can raise while rendering; each one is the request's (or the template's) fault.
_RENDER_ERRORS: tuple[type[Exception], ...] = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)


class _GenerationTag(jinja2.ext.Extension):
    """Accept transformers' ``{% generation %}...{% endgeneration %}`` block and render its body unchanged.

    transformers uses the block to build assistant-token masks for training; for inference it is transparent.
    """

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        """Parse the block into a call that just renders the body."""
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        """Return the block's rendered body as is."""
        return caller()


def _raise_exception(message: str) -> None:
    """Template global: abort rendering with ``message`` (reported to the client)."""
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    """Template global: the current local time formatted with ``fmt``."""
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Template filter: ``json.dumps`` without Jinja's HTML escaping, as transformers defines it."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _build_environment() -> ImmutableSandboxedEnvironment:
    """The Jinja environment every chat template is compiled in."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _build_environment()


def _error(detail: str, *, param: str | None = None) -> TemplateError:
    """A client-facing TemplateError whose message starts with ``Chat template error: ``."""
    return TemplateError(ERROR_PREFIX + detail, param=param)


def _describe(exc: Exception) -> str:
    """A one-line description of an exception raised while compiling or rendering a template."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.message} (line {exc.lineno})"
    if isinstance(exc, jinja2.TemplateError):
        return exc.message or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class ChatTemplate:
    """A compiled HF-style chat template plus the special tokens it may reference."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
    ) -> None:
        """Compile ``source``; a syntax error raises TemplateError. Unset special tokens stay undefined."""
        self.source = source
        tokens = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
        self.special_tokens: dict[str, str] = {k: v for k, v in tokens.items() if v is not None}
        try:
            self._template = _ENV.from_string(source)
        except jinja2.TemplateError as exc:
            raise _error(_describe(exc)) from exc

    def __repr__(self) -> str:
        """Short form naming the template size and special tokens."""
        return f"ChatTemplate({len(self.source)} chars, special_tokens={self.special_tokens!r})"

    @classmethod
    def from_model_dir(cls, path: str, *, name: str | None = None) -> ChatTemplate | None:
        """Load from a HF model directory: `chat_template.jinja` file if present, else `chat_template.json`
        ({"chat_template": ...}), else `tokenizer_config.json` key `chat_template`, which may be a string or a
        list of {"name", "template"} (pick `name` if given, else "default", else the first). Special tokens come
        from tokenizer_config.json (`bos_token` etc. may be a string or a dict with "content"). Returns None when
        the model has no template.

        Named templates in ``additional_chat_templates/<name>.jinja`` are found too, and special tokens missing
        from tokenizer_config.json are taken from ``special_tokens_map.json``. A ``name`` that the model does not
        have, an unreadable directory or a malformed JSON file raises ConfigError.
        """
        if not os.path.isdir(path):
            raise ConfigError(f"model directory {path!r} does not exist or is not a directory")
        config = read_json_object(os.path.join(path, "tokenizer_config.json"))
        source = _select_template(collect_templates(path, config), name, path)
        if source is None:
            return None
        return cls(source, **_special_tokens(path, config))

    def render(
        self,
        messages: list[dict],
        *,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template_kwargs: dict | None = None,
    ) -> str:
        """Render; any failure (TemplateSyntaxError, UndefinedError, TypeError, raise_exception(...)) becomes
        TemplateError with a message that starts with 'Chat template error: '.

        With ``continue_final_message`` the prompt ends right after the final message's text, so the model
        continues that message instead of starting a new one.
        """
        if add_generation_prompt and continue_final_message:
            raise _error("add_generation_prompt and continue_final_message are mutually exclusive")
        context = self._context(messages, tools, documents, add_generation_prompt, chat_template_kwargs)
        try:
            rendered = self._template.render(context)
        except _RENDER_ERRORS as exc:
            raise _error(_describe(exc)) from exc
        if continue_final_message:
            return _cut_after_final_message(rendered, messages)
        return rendered

    def _context(
        self,
        messages: list[dict],
        tools: list[dict] | None,
        documents: list[dict] | None,
        add_generation_prompt: bool,
        chat_template_kwargs: dict | None,
    ) -> dict[str, Any]:
        """The render variables: special tokens, then the kwargs (which may override them), then the request."""
        _check_dicts(tools, "tools")
        _check_dicts(documents, "documents")
        context: dict[str, Any] = dict(self.special_tokens)
        if chat_template_kwargs:
            _check_kwargs(chat_template_kwargs)
            context.update(chat_template_kwargs)
        context["messages"] = messages
        context["tools"] = tools
        context["documents"] = documents
        context["add_generation_prompt"] = add_generation_prompt
        return context


def _check_dicts(items: list[dict] | None, param: str) -> None:
    """Reject ``tools``/``documents`` that are not a list of objects (transformers rejects them too)."""
    if items is None:
        return
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _error(f"{param} must be a list of objects", param=param)


def _check_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Reject chat_template_kwargs that try to replace a variable the request sets itself."""
    if not isinstance(kwargs, Mapping):
        raise _error("chat_template_kwargs must be an object", param="chat_template_kwargs")
    clash = _RESERVED_KWARGS.intersection(kwargs)
    if clash:
        names = ", ".join(sorted(clash))
        raise _error(f"chat_template_kwargs may not set {names}", param="chat_template_kwargs")


def _final_message_text(messages: list[dict]) -> str:
    """The text of the last message: its content string, or the last text part of its content list."""
    if not messages:
        raise _error("continue_final_message is set but there are no messages", param="messages")
    content = messages[-1].get("content") if isinstance(messages[-1], Mapping) else None
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        for part in reversed(content):
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                return part["text"]
    raise _error("continue_final_message is set but the final message has no text to continue", param="messages")


def _cut_after_final_message(rendered: str, messages: list[dict]) -> str:
    """Truncate ``rendered`` right after the last occurrence of the final message's text (as transformers does)."""
    final = _final_message_text(messages)
    stripped = final.strip()
    location = rendered.rfind(stripped)
    if location < 0:
        raise _error(
            "continue_final_message is set but the final message does not appear in the rendered prompt; "
            "the chat template alters or drops it",
            param="messages",
        )
    end = location + len(final.lstrip())
    if rendered[location:end] == final:
        return rendered[:end]
    # The template trimmed whitespace around the message, so keep only its stripped text.
    return rendered[: location + len(stripped)]


def _select_template(templates: dict[str, str], name: str | None, path: str) -> str | None:
    """Pick ``name`` if given, else "default", else the first template; None when there are none."""
    if not templates:
        return None
    if name is not None:
        if name not in templates:
            available = ", ".join(sorted(templates))
            raise ConfigError(f"model {path!r} has no chat template named {name!r} (available: {available})")
        return templates[name]
    return templates.get("default", next(iter(templates.values())))


def _token_content(value: Any) -> str | None:
    """A special token given as a string or as an AddedToken dict ({"content": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _special_tokens(path: str, config: dict[str, Any] | None) -> dict[str, str | None]:
    """Special tokens from tokenizer_config.json; a missing or null one is taken from special_tokens_map.json."""
    config = config or {}
    fallback: dict[str, Any] | None = None
    tokens: dict[str, str | None] = {}
    for key in SPECIAL_TOKEN_NAMES:
        token = _token_content(config.get(key))
        if token is None:
            if fallback is None:
                fallback = read_json_object(os.path.join(path, "special_tokens_map.json")) or {}
            token = _token_content(fallback.get(key))
        tokens[key] = token
    return tokens
