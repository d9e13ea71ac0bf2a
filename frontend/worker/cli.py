"""What every worker command shares: its flags declared as ``config.options.Option`` rows (the daemon's own
declaration type) with ``DYN_<WORKER>_<FLAG>`` env vars, and the process set-up before serving (logging, process
title, dying with the parent)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from ..config.etcd_settings import EtcdSettings
from ..config.options import ETCD_OPTIONS, OPTIONS_BY_NAME, Option
from ..observability.logs import setup_logging
from ..protocol.errors import ConfigError
from ..transport.process import die_with_parent, set_process_title

# Flags every worker command takes besides --registry-endpoint and --namespace: discovery (the daemon's own
# options, whose env vars DYN_DISCOVERY_BACKEND, DYN_ETCD_ENDPOINTS, ETCD_ENDPOINTS... work here too) and the
# worker's status endpoint (Dynamo's DYN_SYSTEM_PORT works too).
RUNTIME_FLAGS: tuple[Option, ...] = (
    *(dataclasses.replace(option, group="", env_aliases=(option.env_var, *option.env_aliases))
      for option in (OPTIONS_BY_NAME["lease_ttl_s"], *ETCD_OPTIONS)),
    Option("system_port", int, 0, "Serve the worker's own GET /metrics (Prometheus text: requests in flight, "
           "prompt tokens by source) and GET /health on this port of --host; 0 = off.",
           env_aliases=("DYN_SYSTEM_PORT",), validate=lambda port: None if 0 <= port < 65536 else "must be a TCP port (1-65535), or 0 (off)"),
)


def runtime_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``WorkerRuntime``'s discovery and status arguments from a worker command's parsed ``RUNTIME_FLAGS``."""
    etcd = None
    if args.discovery_backend == "etcd":
        etcd = EtcdSettings(endpoints=args.etcd_endpoints, ca_path=args.etcd_ca_path, cert_path=args.etcd_cert_path,
                            key_path=args.etcd_key_path, username=args.etcd_username, password=args.etcd_password)
    return {"etcd": etcd, "lease_ttl_s": args.lease_ttl_s, "system_port": args.system_port}


def worker_flags(env_prefix: str, *options: Option) -> tuple[Option, ...]:
    """A worker command's flag table: each option's env var is ``<env_prefix><NAME>`` (e.g. ``DYN_MOCKER_``)."""
    return tuple(dataclasses.replace(option, env_prefix=env_prefix) for option in options)


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: Sequence[Option],
              environ: Mapping[str, str] | None = None) -> None:
    """``--name`` (and its ``flag_aliases``) for each flag, its default taken from its env var when set (flags
    win), each value converted and validated by ``Option.parse``; and ``--exit-with-parent``."""
    environ = os.environ if environ is None else environ
    for option in flags:
        try:
            found, value = option.from_environ(environ)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        default = value if found else option.default
        if option.kind is bool:
            parser.add_argument(option.flag, *option.flag_aliases, action=argparse.BooleanOptionalAction,
                                default=default, help=option.help_text)
        else:
            parser.add_argument(option.flag, *option.flag_aliases, type=_from_command_line(option), default=default,
                                help=option.help_text)
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="Exit when the parent process exits (the daemon starts its mock workers so).")


def _from_command_line(option: Option) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        try:
            return option.parse(raw, "command line")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = option.kind.__name__  # argparse names the type in some messages
    return convert


def start_worker_process(title: str, log_name: str, log_level: str, log_format: str, exit_with_parent: bool) -> None:
    """Logging on stderr, the process title ``title`` and, if asked, SIGTERM when the parent exits."""
    setup_logging(log_level, log_name, log_format)
    if exit_with_parent:
        die_with_parent()
    set_process_title(title)
