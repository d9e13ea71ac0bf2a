"""What a parser may need to know about the request: its tools, the end of its prompt, thinking on or off."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ParserContext:
    """Per-request inputs of the parser factories."""

    tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI function definitions (name, parameters)
    prompt_tail: str = ""  # the last few tokens of the rendered prompt, decoded
    enable_thinking: bool | None = None  # chat_template_kwargs.enable_thinking, if given

    def parameter_schema(self, function: str, parameter: str) -> dict[str, Any] | None:
        """The JSON schema of one parameter of one tool, if the request declares it."""
        for definition in self.tools:
            if definition.get("name") == function:
                parameters = definition.get("parameters") or {}
                properties = parameters.get("properties") if isinstance(parameters, dict) else None
                schema = properties.get(parameter) if isinstance(properties, dict) else None
                return schema if isinstance(schema, dict) else None
        return None
