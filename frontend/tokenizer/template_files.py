"""The chat templates of a model directory, read without Jinja2 (the worker SDK checksums them; the tokenizer
process compiles them in ``chat_template.py``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ..protocol.errors import ConfigError


def read_json_object(path: str) -> dict[str, Any] | None:
    """A JSON object file's contents, or None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def _read_text(path: str) -> str | None:
    """A text file's contents, or None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _templates_from_value(value: Any, where: str) -> dict[str, str]:
    """Named templates from a ``chat_template`` value: a string (the default) or a list of {name, template}."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return {"default": value}
    if isinstance(value, Mapping):
        value = [{"name": key, "template": template} for key, template in value.items()]
    if isinstance(value, list) and all(_is_named_template(item) for item in value):
        return {item["name"]: item["template"] for item in value}
    raise ConfigError(f"{where}: chat_template must be a string or a list of {{'name', 'template'}} objects")


def _is_named_template(item: Any) -> bool:
    """True for a {"name": str, "template": str} entry."""
    return isinstance(item, Mapping) and isinstance(item.get("name"), str) and isinstance(item.get("template"), str)


def template_sources(path: str) -> dict[str, str]:
    """Every chat template of a model directory by name, as ``from_model_dir`` finds them (empty: none)."""
    return collect_templates(path, read_json_object(os.path.join(path, "tokenizer_config.json")))


def collect_templates(path: str, config: dict[str, Any] | None) -> dict[str, str]:
    """All templates of a model directory by name; later sources override earlier ones of the same name."""
    templates = _templates_from_value((config or {}).get("chat_template"), "tokenizer_config.json")
    json_file = read_json_object(os.path.join(path, "chat_template.json"))
    if json_file is not None:
        templates.update(_templates_from_value(json_file.get("chat_template"), "chat_template.json"))
    jinja_file = _read_text(os.path.join(path, "chat_template.jinja"))
    if jinja_file:
        templates["default"] = jinja_file
    templates.update(_additional_templates(os.path.join(path, "additional_chat_templates")))
    return templates


def _additional_templates(directory: str) -> dict[str, str]:
    """Named templates stored as ``<name>.jinja`` files (newer transformers' ``additional_chat_templates``)."""
    if not os.path.isdir(directory):
        return {}
    templates: dict[str, str] = {}
    for entry in sorted(os.listdir(directory)):
        if entry.endswith(".jinja"):
            templates[entry[: -len(".jinja")]] = _read_text(os.path.join(directory, entry)) or ""
    return templates
