"""The daemon's command line: --help documents every flag with its DYN_ env var; --dump-config shows the
resolved configuration with precedence flag > env > config file > default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest
from e2e_support import REPO

FLAGS = ("config", "http-host", "http-port", "workers", "http-body-limit-mb", "max-concurrent-requests",
         "tokenizer-workers", "router-mode", "namespace", "registry-endpoint", "lease-ttl-s", "mock-workers",
         "mock-speedup-ratio", "mock-model-path", "mock-model-name", "log-level", "run-dir")


def frontend(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DYN_")}
    return subprocess.run([sys.executable, "-m", "frontend", *args], cwd=REPO, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def help_entries(text: str) -> dict[str, str]:
    """argparse help split per option: '--flag' -> its whole (unwrapped) description."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"\s{2}(--[a-z][a-z0-9-]*)", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current and line.startswith(" " * 4):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def test_help_lists_every_flag_with_its_env_var():
    result = frontend("--help", env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    entries = help_entries(result.stdout)
    for flag in FLAGS:
        assert f"--{flag}" in entries, f"--{flag} missing from --help:\n{result.stdout}"
        env_var = "DYN_" + flag.upper().replace("-", "_")
        assert env_var in entries[f"--{flag}"], f"--{flag} does not name {env_var}: {entries[f'--{flag}']!r}"
    assert "--dump-config" in entries


def dump(tmp_path, toml: str, *args: str, env: dict[str, str] | None = None) -> dict:
    path = tmp_path / "frontend.toml"
    path.write_text(toml)
    result = frontend("--config", str(path), "--dump-config", *args, env=env)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def test_dump_config_precedence(tmp_path):
    toml = ('http_port = 8100\nnamespace = "from-file"\nlease_ttl_s = 3.5\nworkers = 3\n'
            'log_level = "error"\nrouter_mode = "random"\n')
    env = {"DYN_HTTP_PORT": "8200", "DYN_NAMESPACE": "from-env", "DYN_WORKERS": "4"}
    config = dump(tmp_path, toml, "--http-port", "8300", env=env)
    assert config["http_port"] == 8300  # flag beats env and file
    assert config["namespace"] == "from-env"  # env beats file
    assert config["workers"] == 4
    assert config["lease_ttl_s"] == 3.5  # file beats default
    assert config["log_level"] == "error"
    assert config["router_mode"] == "random"
    assert config["http_body_limit_mb"] == 192.0  # default
    assert config["mock_workers"] == 0

    # without env and flag the file's values stand
    only_file = dump(tmp_path, toml)
    assert (only_file["http_port"], only_file["namespace"], only_file["workers"]) == (8100, "from-file", 3)


def test_dump_config_round_trips(tmp_path):
    first = dump(tmp_path, 'namespace = "a \\"quoted\\" name"\nhttp_body_limit_mb = 0.5\n',
                 "--mock-model-name", "x\ty")
    path = tmp_path / "again.toml"
    path.write_text(frontend("--config", str(tmp_path / "frontend.toml"), "--mock-model-name", "x\ty",
                             "--dump-config").stdout)
    result = frontend("--config", str(path), "--dump-config")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout) == first
    assert first["namespace"] == 'a "quoted" name'
    assert first["mock_model_name"] == "x\ty"


@pytest.mark.parametrize("args,env,needle", [
    (("--http-port", "99999"), {}, "--http-port"),
    (("--workers", "zero"), {}, "--workers"),
    ((), {"DYN_LEASE_TTL_S": "-1"}, "--lease-ttl-s"),
    (("--router-mode", "fastest"), {}, "--router-mode"),
    (("--registry-endpoint", "127.0.0.1:5570"), {}, "--registry-endpoint"),
    (("--config", "/nonexistent/frontend.toml"), {}, "--config"),
])
def test_bad_configuration_exits_2_naming_the_flag(args, env, needle):
    result = frontend(*args, "--dump-config", env=env)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_config_file_key_is_rejected(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("http_prot = 8000\n")
    result = frontend("--config", str(path), "--dump-config")
    assert result.returncode == 2
    assert "http_prot" in result.stderr
