"""Command line entry: resolve the configuration, then run the daemon. The only place that exits."""

from __future__ import annotations

import sys
from typing import Sequence

from .protocol.errors import ConfigError, FrontendError

EXIT_CONFIG_ERROR = 2
EXIT_STARTUP_ERROR = 3


def main(argv: Sequence[str] | None = None) -> int:
    from .config import dump_toml, resolve

    try:
        config, dump, ignored = resolve(argv)
        if config.general.dump_config_to:
            _write(config.general.dump_config_to, dump_toml(config))
    except ConfigError as exc:
        print(f"frontend: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if dump:
        sys.stdout.write(dump_toml(config))
        return 0
    from .daemon.supervisor import serve

    try:
        return serve(config, ignored)
    except ConfigError as exc:
        print(f"frontend: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except FrontendError as exc:
        print(f"frontend: {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR


def _write(path: str, text: str) -> None:
    """``--dump-config-to``: the resolved configuration, written before the daemon starts."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise ConfigError(f"--dump-config-to: cannot write {path}: {exc.strerror}") from None
