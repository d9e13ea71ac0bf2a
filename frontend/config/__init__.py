"""Daemon configuration: option declarations (options.py) and layered loading (loader.py)."""

from .loader import FrontendConfig, build_parser, dump_toml, load_config

__all__ = ["FrontendConfig", "build_parser", "dump_toml", "load_config"]
