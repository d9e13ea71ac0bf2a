"""Build the frozen, typed daemon configuration (``sections.FrontendConfig``) from defaults, a TOML file,
``DYN_*`` env vars and the command line."""

from __future__ import annotations

import argparse
import os
import tomllib
from typing import Any, Mapping, NamedTuple, Sequence

import msgspec

from .. import __version__
from ..protocol.errors import ConfigError
from .dynamo_flags import add_ignored_flags, ignored_settings, pop_ignored
from .options import OPTIONS, OPTIONS_BY_NAME, SECRET_MASK, Option
from .sections import FrontendConfig

_GROUP_TITLES = {
    "general": "general", "http": "HTTP server", "limits": "per-request limits", "auth": "API keys",
    "preprocess": "pre-processing", "router": "routing", "discovery": "worker discovery",
    "mocker": "built-in mock workers", "kserve": "KServe gRPC server",
    "parsers": "tool calls, reasoning, Responses and Anthropic APIs",
    "media": "generated images and videos served by URL",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``--help``-documented parser; every flag names its env var and default."""
    parser = argparse.ArgumentParser(
        prog="python -m frontend",
        description="OpenAI-compatible LLM inference frontend. Precedence: flag > DYN_* env var > --config file "
                    "> default.",
        argument_default=argparse.SUPPRESS,
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        group = groups.get(option.group)
        if group is None:
            group = groups[option.group] = parser.add_argument_group(_GROUP_TITLES[option.group])
        if option.kind is bool:
            group.add_argument(option.flag, *option.flag_aliases, action=argparse.BooleanOptionalAction,
                               help=option.help_text)
        elif option.repeatable:  # a list: Option.parse joins it
            group.add_argument(option.flag, *option.flag_aliases, action="append",
                               metavar=option.name.split("_")[-1].upper(), help=option.help_text)
        else:
            group.add_argument(option.flag, *option.flag_aliases, metavar=option.name.split("_")[-1].upper(),
                               help=option.help_text)
    parser.add_argument("--dump-config", action="store_true", help="Print the resolved configuration as TOML "
                        "and exit.")
    parser.add_argument("--version", action="version", version=f"dynamo-py-frontend {__version__}")
    add_ignored_flags(parser)
    return parser


class Resolved(NamedTuple):
    """What the command line and environment resolve to."""

    config: FrontendConfig
    dump: bool  # --dump-config: print the configuration and exit
    ignored: list[str]  # the NVIDIA Dynamo flags given that this daemon ignores, each "--flag (why)"


def load_config(argv: Sequence[str] | None = None,
                environ: Mapping[str, str] | None = None) -> tuple[FrontendConfig, bool]:
    """Resolve the configuration. Returns ``(config, dump_requested)``; raises ConfigError naming the flag."""
    resolved = resolve(argv, environ)
    return resolved.config, resolved.dump


def resolve(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Resolved:
    """Resolve the configuration and the ignored Dynamo flags; raises ConfigError naming the flag."""
    environ = os.environ if environ is None else environ
    cli = vars(build_parser().parse_args(argv))
    dump = bool(cli.pop("dump_config", False))
    ignored = ignored_settings(pop_ignored(cli), environ)
    values: dict[str, Any] = {option.name: option.default for option in OPTIONS}
    config_path = cli.get("config") or environ.get(OPTIONS_BY_NAME["config"].env_var, "")
    if config_path:
        values.update(_read_file(config_path))
        values["config"] = config_path
    for option in OPTIONS:
        found, value = option.from_environ(environ)
        if found:
            values[option.name] = value
    for name, raw in cli.items():
        values[name] = OPTIONS_BY_NAME[name].parse(raw, "command line")
    return Resolved(FrontendConfig.from_values(values), dump, ignored)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in table.items():
        option = OPTIONS_BY_NAME.get(key.replace("-", "_"))
        if option is None or option.name == "config":
            raise ConfigError(f"--config: unknown key {key!r} in {path}")
        values[option.name] = option.parse(raw, f"config file {path}")
    return values


def dump_toml(config: FrontendConfig) -> str:
    """The configuration as a TOML document that ``--config`` accepts; a secret option that is set (the API keys)
    is ``"***"``, which ``--config`` refuses until the real value is put back."""
    lines = []
    for option in OPTIONS:
        if option.name == "config":
            continue
        value = config.value(option.name)
        if option.secret and value:
            value = SECRET_MASK
        lines.append(f"{option.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return msgspec.json.encode(str(value)).decode().replace("\x7f", "\\u007f")  # TOML forbids a raw DEL


def option_for(name: str) -> Option:
    """The declaration of one option (for error messages that name the flag)."""
    return OPTIONS_BY_NAME[name]
