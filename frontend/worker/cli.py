"""What every worker command shares: a table of flags with ``DYN_<WORKER>_<FLAG>`` env vars, and the process
set-up before serving (logging, process title, dying with the parent)."""

from __future__ import annotations

import argparse
import os
from typing import Any, Mapping, Sequence

from ..observability.logs import setup_logging
from ..transport.process import die_with_parent, set_process_title

Flag = tuple[str, type, Any, str]  # name, type, default, help


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: Sequence[Flag], env_prefix: str,
              aliases: Mapping[str, list[str]] | None = None) -> None:
    """``--name`` for each flag, its default taken from env ``<env_prefix><NAME>`` when set (flags win), and
    ``--exit-with-parent``."""
    for name, kind, default, help_text in flags:
        env = env_prefix + name.upper()
        value = kind(os.environ[env]) if env in os.environ else default
        parser.add_argument("--" + name.replace("_", "-"), *(aliases or {}).get(name, []), type=kind, default=value,
                            help=f"{help_text} [env {env}; default {default!r}]")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="Exit when the parent process exits (the daemon starts its mock workers so).")


def start_worker_process(title: str, log_name: str, log_level: str, log_format: str, exit_with_parent: bool) -> None:
    """Logging on stderr, the process title ``title`` and, if asked, SIGTERM when the parent exits."""
    setup_logging(log_level, log_name, log_format)
    if exit_with_parent:
        die_with_parent()
    set_process_title(title)
