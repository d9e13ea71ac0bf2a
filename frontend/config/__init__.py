"""Daemon configuration: option declarations (options.py), typed sections (sections.py) and layered loading
(loader.py)."""

from .loader import build_parser, dump_toml, load_config, resolve
from .sections import FrontendConfig

__all__ = ["FrontendConfig", "build_parser", "dump_toml", "load_config", "resolve"]
