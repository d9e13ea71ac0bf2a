"""The typed configuration sections (frontend.config.sections) against the option table, unit conversion, the
settings the daemon derives from the sections, and the worker commands' flags (frontend.worker.cli)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import msgspec
import pytest

from frontend.config.loader import _GROUP_TITLES, dump_toml, load_config
from frontend.config.options import OPTIONS, OPTIONS_BY_NAME, Option
from frontend.config.sections import (MIB, SECTIONS, FrontendConfig, HttpConfig, LimitsConfig, MediaConfig,
                                      ParsersConfig, RouterConfig, mib_to_bytes)
from frontend.config.topology import Endpoints
from frontend.engines.embedding import main as embedding_main
from frontend.engines.mocker import main as mocker_main
from frontend.engines.vllm import main as vllm_main
from frontend.gateway.auth import ApiKeys
from frontend.gateway.settings import ApiSettings, GatewaySettings
from frontend.router.select import RouterSettings
from frontend.router.thresholds import BusyThresholds
from frontend.stores.media import MediaSettings
from frontend.worker.cli import add_flags, worker_flags

# A valid value other than the default for every daemon option (TOML-typed); "config" is the file itself.
SAMPLES = {
    "http_host": "127.0.0.1", "http_port": 1234, "workers": 3, "http_body_limit_mb": 2.5,
    "tls_cert_path": "/c.pem", "tls_key_path": "/k.pem", "tls_client_ca_path": "/ca.pem", "tls_min_version": "1.3",
    "graceful_shutdown_timeout": 5.0, "access_log": True, "max_concurrent_requests": 7, "tokenizer_workers": 2,
    "disable_nvext": True, "stream_coalesce": True, "io_thread_sched_batch": False, "tokenize_inline_max_bytes": 100, "fast_bpe": False, "router_mode": "kv", "kv_overlap_score_weight": 0.5, "router_temperature": 0.3,
    "kv_events": False, "router_ttl_s": 60.0, "router_pending_ttl_s": 5.0, "active_decode_blocks_threshold": 0.9,
    "active_prefill_tokens_threshold": 10000, "kv_index_capacity_blocks": 4096, "kv_index_max_workers": 8,
    "migration_limit": 1, "migration_max_seq_len": 4096, "decode_fallback": False, "mock_prefill_workers": 1,
    "namespace": "ns", "registry_endpoint": "ipc:///tmp/x", "lease_ttl_s": 0.5, "mock_workers": 1,
    "mock_speedup_ratio": 1e6, "mock_model_path": "/models/m", "mock_model_name": "m",
    "mock_extra_models": "embedding,videos", "metrics_prefix": "my_frontend", "log_level": "debug",
    "log_format": "json", "run_dir": "/tmp/run", "media_store_path": "/tmp/media", "media_store_ttl_s": 60.0,
    "media_store_max_mb": 16.0, "media_public_url": "https://api.example.com", "kserve_grpc_server": True,
    "kserve_grpc_host": "127.0.0.2", "kserve_grpc_port": 8788, "kserve_grpc_workers": 2,
    "grpc_initial_stream_window_size": 1048576, "tool_call_parser": "hermes", "reasoning_parser": "m=qwen3",
    "enable_anthropic_api": False, "responses_store": False, "responses_store_path": "/tmp/r.db",
    "responses_store_ttl_s": 60.0, "responses_store_max_mb": 8.0, "responses_store_url": "postgresql://u:pw@db/r",
    "api_key": "sk-alpha,sk-beta", "api_key_file": "/keys.txt", "api_key_exempt": "/live,/metrics",
    "max_stop_strings": 4, "max_stop_string_length": 64, "max_tools": 8, "max_tool_schema_bytes": 4096,
    "max_messages": 100,
    "max_stream_backlog_mb": 2.5,
    "max_queued_tokens": 64,
    "slow_reader_timeout_s": 5.0,
    "otel_export_enabled": True,
    "active_prefill_tokens_threshold_frac": 1.5, "overload_status_code": 503, "disable_frontend_admin_api": True,
    "namespace_prefix": "ns-", "model_name": "m", "model_path": "/models/m", "kv_cache_block_size": 32,
    "dump_config_to": "/tmp/config.toml",
    "discovery_backend": "etcd", "etcd_endpoints": "https://etcd-0:2379,https://etcd-1:2379",
    "etcd_ca_path": "/etcd-ca.pem", "etcd_cert_path": "/etcd.pem", "etcd_key_path": "/etcd.key",
    "etcd_username": "etcd-user-x", "etcd_password": "etcd-pw-x",
}


def env_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def section_value(config: FrontendConfig, name: str) -> object:
    return getattr(getattr(config, OPTIONS_BY_NAME[name].group), name)


# ---- the sections match the option table ---------------------------------------------------------------


def test_every_option_is_in_exactly_one_section_with_its_type_and_default():
    seen: list[str] = []
    for group, section in SECTIONS.items():
        fields = msgspec.structs.fields(section)
        assert [f.name for f in fields] == [o.name for o in OPTIONS if o.group == group], group  # table order
        for field in fields:
            option = OPTIONS_BY_NAME[field.name]
            assert field.type is option.kind, field.name
            assert field.default == option.default, field.name
            assert type(field.default) is option.kind, field.name
        seen += [f.name for f in fields]
    assert sorted(seen) == sorted(OPTIONS_BY_NAME)  # every option once, no field without an option


def test_every_group_is_a_section_with_a_help_title():
    assert {option.group for option in OPTIONS} == set(SECTIONS) == set(_GROUP_TITLES)
    for group, section in SECTIONS.items():
        field = next(f for f in msgspec.structs.fields(FrontendConfig) if f.name == group)
        assert field.default == section()  # FrontendConfig() is the all-defaults configuration


def test_loaded_config_is_made_of_typed_sections():
    config, _ = load_config([], {})
    assert config == FrontendConfig()
    for group, section in SECTIONS.items():
        assert type(getattr(config, group)) is section
    for option in OPTIONS:
        assert config.value(option.name) == section_value(config, option.name) == option.default


def test_sections_and_config_are_frozen():
    config, _ = load_config([], {})
    with pytest.raises(AttributeError):
        config.http.http_port = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.http = HttpConfig()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.no_such_option  # noqa: B018  (not an option: no flat fallback)


def test_samples_cover_every_option():
    assert set(SAMPLES) | {"config"} == set(OPTIONS_BY_NAME), "a new option needs a sample here"
    for name, value in SAMPLES.items():
        option = OPTIONS_BY_NAME[name]
        assert value != option.default, name
        assert option.parse(value, "test") == value, name


# ---- env var, config-file key and flag of every option ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_env_var_of_every_option_reaches_its_section(name):
    option = OPTIONS_BY_NAME[name]
    assert option.env_var == "DYN_" + name.upper()
    config, _ = load_config([], {option.env_var: env_text(SAMPLES[name])})
    assert section_value(config, name) == SAMPLES[name]
    assert type(section_value(config, name)) is option.kind


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_config_file_key_of_every_option_reaches_its_section(tmp_path, name):
    path = tmp_path / "frontend.toml"
    path.write_text(f"{name} = {dump_value(SAMPLES[name])}\n", encoding="utf-8")
    config, _ = load_config(["--config", str(path)], {})
    assert section_value(config, name) == SAMPLES[name]
    assert config.general.config == str(path)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_flag_of_every_option_reaches_its_section(name):
    option = OPTIONS_BY_NAME[name]
    value = SAMPLES[name]
    argv = ([option.flag if value else "--no-" + option.flag[2:]] if option.kind is bool
            else [f"{option.flag}={env_text(value)}"])
    config, _ = load_config(argv, {})
    assert section_value(config, name) == value


def dump_value(value: object) -> str:
    """A TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return msgspec.json.encode(value).decode()


def test_all_samples_at_once_round_trip_through_dump_toml(tmp_path):
    env = {OPTIONS_BY_NAME[name].env_var: env_text(value) for name, value in SAMPLES.items()}
    config, _ = load_config([], env)
    path = tmp_path / "dump.toml"
    text = dump_toml(config)
    secrets = [option.name for option in OPTIONS if option.secret]
    assert {"api_key", "etcd_username", "etcd_password", "responses_store_url"} <= set(secrets)
    for name in secrets:  # masked in the dump: put back by hand, as an operator would
        assert f'{name} = "***"' in text and SAMPLES[name] not in text
        text = text.replace(f'{name} = "***"', f"{name} = {dump_value(SAMPLES[name])}")
    path.write_text(text, encoding="utf-8")
    reloaded, _ = load_config(["--config", str(path)], {})
    assert msgspec.structs.replace(reloaded, general=msgspec.structs.replace(reloaded.general, config="")) == config


# ---- MiB -> bytes, once ----------------------------------------------------------------------------------


def test_mib_to_bytes():
    assert MIB == 1048576
    assert mib_to_bytes(1) == 1048576
    assert mib_to_bytes(0.25) == 262144
    assert mib_to_bytes(1.5) == 1572864
    assert isinstance(mib_to_bytes(2.0), int)


def test_mib_options_in_bytes():
    config, _ = load_config(["--http-body-limit-mb", "0.5", "--media-store-max-mb", "3",
                             "--responses-store-max-mb", "1.25"], {})
    assert config.http.http_body_limit_bytes == 524288
    assert config.media.media_store_max_bytes == 3 * 1048576
    assert config.parsers.responses_store_max_bytes == 1310720
    defaults = FrontendConfig()
    assert defaults.http.http_body_limit_bytes == 192 * 1048576
    assert MediaSettings().max_bytes == defaults.media.media_store_max_bytes == 1024 * 1048576
    assert ApiSettings().responses_store_max_bytes == defaults.parsers.responses_store_max_bytes == 256 * 1048576
    assert ApiSettings().responses_store_ttl_s == defaults.parsers.responses_store_ttl_s


# ---- settings derived from the sections ------------------------------------------------------------------


def endpoints(run_dir: str) -> Endpoints:
    return Endpoints.derive("tcp://127.0.0.1:5570", run_dir, 2)


def test_gateway_settings_from_sections(tmp_path):
    env = {OPTIONS_BY_NAME[name].env_var: env_text(value) for name, value in SAMPLES.items()}
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# keys\nsk-gamma\n\nsk-alpha\n", encoding="utf-8")
    env["DYN_API_KEY_FILE"] = str(key_file)
    config, _ = load_config([], env)
    run_dir = str(tmp_path)
    settings = GatewaySettings.from_config(config, endpoints(run_dir), run_dir)
    assert settings.namespace == "ns-"  # --namespace-prefix wins; the mock workers register there
    assert settings.body_limit_bytes == mib_to_bytes(2.5)
    assert (settings.max_concurrent_requests, settings.log_level, settings.log_format) == (7, "debug", "json")
    assert settings.stream_coalesce is True
    assert settings.tokenize_inline_max_bytes == 100 and settings.fast_bpe is False
    assert settings.otel_export_enabled is True
    assert settings.metrics_prefix == "my_frontend"
    assert settings.http_ready_dir == os.path.join(run_dir, "http-ready")
    assert settings.draining_flag == os.path.join(run_dir, "draining")
    assert settings.metrics_dir == os.path.join(run_dir, "metrics")
    assert settings.router == RouterSettings(
        mode="kv", overlap_weight=0.5, temperature=0.3, predicted_ttl_s=60.0,
        busy=BusyThresholds(active_decode_blocks_threshold=0.9, active_prefill_tokens_threshold=10000,
                            active_prefill_tokens_threshold_frac=1.5),
        overload_status_code=503, migration_limit=1, migration_max_seq_len=4096,
        decode_fallback=False)
    assert settings.admin_api is False
    assert settings.busy_thresholds_path == os.path.join(run_dir, "busy-thresholds.json")
    assert settings.local_model == ("m", "/models/m") and settings.kv_cache_block_size == 32
    assert settings.apis == ApiSettings(tool_call_parsers={"*": "hermes"}, reasoning_parsers={"m": "qwen3"},
                                        anthropic_api=False, responses_store_path="", responses_store_ttl_s=60.0,
                                        responses_store_max_bytes=8 * MIB, nvext=False)
    assert settings.media == MediaSettings(path="/tmp/media", ttl_s=60.0, max_bytes=16 * MIB,
                                           public_url="https://api.example.com")
    assert settings.api_keys == ApiKeys.from_keys(["sk-alpha", "sk-beta", "sk-gamma"], ("/live", "/metrics"))
    assert settings.limits == LimitsConfig(max_stop_strings=4, max_stop_string_length=64, max_tools=8,
                                           max_tool_schema_bytes=4096, max_messages=100, max_stream_backlog_mb=2.5,
                                           max_queued_tokens=64, slow_reader_timeout_s=5.0)
    assert b"sk-" not in msgspec.json.encode(settings)  # digests only reach the HTTP and gRPC processes
    # what the daemon hands the HTTP processes survives JSON
    assert msgspec.json.decode(msgspec.json.encode(settings), type=GatewaySettings) == settings


def test_gateway_settings_defaults_live_in_the_run_directory(tmp_path):
    run_dir = str(tmp_path)
    settings = GatewaySettings.from_config(FrontendConfig(), endpoints(run_dir), run_dir)
    assert settings.apis.responses_store_path == os.path.join(run_dir, "responses.sqlite3")
    assert settings.media.path == os.path.join(run_dir, "media")
    assert settings.apis.nvext is True
    assert settings.router == RouterSettings()
    assert not settings.api_keys.enabled
    assert settings.limits == LimitsConfig() == FrontendConfig().limits
    assert settings.api_keys.exempt == ("/live", "/health", "/metrics", "/docs", "/openapi.json")


@pytest.mark.parametrize("kv_events, expected", [(True, 0.0), (False, 120.0)])
def test_router_prediction_ttl_follows_kv_events(kv_events, expected):
    router = RouterConfig(kv_events=kv_events)
    assert router.prediction_ttl_s == expected
    assert RouterSettings.from_config(router).predicted_ttl_s == expected


def test_media_public_url_loses_its_trailing_slash():
    media = MediaSettings.from_config(MediaConfig(media_public_url="https://x.example/"), "/run")
    assert media.public_url == "https://x.example"


def test_responses_store_off_means_no_path():
    from frontend.config.sections import PreprocessConfig

    apis = ApiSettings.from_config(ParsersConfig(responses_store=False), PreprocessConfig(), "/run")
    assert apis.responses_store_path == ""


def test_mock_extra_types_only_with_mock_workers():
    config, _ = load_config(["--mock-extra-models", "embedding,images"], {})
    assert config.mocker.extra_types == []
    config, _ = load_config(["--mock-workers", "2", "--mock-extra-models", "embedding,images"], {})
    assert config.mocker.extra_types == ["embedding", "images"]


# ---- the worker commands' flags ---------------------------------------------------------------------------

WORKERS = [(mocker_main.FLAGS, "DYN_MOCKER_"), (embedding_main.FLAGS, "DYN_EMBEDDING_WORKER_"),
           (vllm_main.FLAGS, "DYN_VLLM_")]


def worker_sample(option: Option) -> str:
    special = {"kv_events": "off", "discovery_backend": "etcd", "etcd_endpoints": "http://127.0.0.1:2379",
               "disaggregation_mode": "decode"}
    if option.name in special:
        return special[option.name]
    return {int: "7", float: "2.5", bool: "true"}.get(option.kind, "sample")


def parse(flags: tuple[Option, ...], argv: list[str], environ: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser, flags, environ)
    return parser.parse_args(argv)


@pytest.mark.parametrize("flags, prefix", WORKERS)
def test_every_worker_flag_has_an_env_var_and_help(flags, prefix):
    parser = argparse.ArgumentParser(formatter_class=lambda prog: argparse.HelpFormatter(prog, width=10_000))
    add_flags(parser, flags, {})
    help_text = parser.format_help()
    for option in flags:
        assert option.env_var == prefix + option.name.upper()
        assert option.help, option.name
        assert option.env_vars[0] == option.env_var and option.help_text in help_text, option.name
        assert option.flag in help_text


@pytest.mark.parametrize("flags, prefix", WORKERS)
def test_every_worker_env_var_sets_its_flag_and_the_flag_wins(flags, prefix):
    environ = {option.env_var: worker_sample(option) for option in flags}
    from_env = parse(flags, [], environ)
    for option in flags:
        expected = option.parse(worker_sample(option), "test")
        assert getattr(from_env, option.name) == expected, option.name
        assert type(getattr(from_env, option.name)) is option.kind, option.name
    defaults = parse(flags, [], {})
    for option in flags:
        assert getattr(defaults, option.name) == option.default, option.name
    option = flags[1]
    assert getattr(parse(flags, [option.flag, "from-flag"], environ), option.name) == "from-flag"


def test_worker_flag_aliases():
    flags = mocker_main.FLAGS
    args = parse(flags, ["--kv-block-size", "32", "--dyn-tool-call-parser", "hermes",
                         "--dyn-reasoning-parser", "qwen3"], {})
    assert (args.block_size, args.tool_call_parser, args.reasoning_parser) == (32, "hermes", "qwen3")
    assert parse(vllm_main.FLAGS, ["--tool-call-parser", "hermes"], {}).dyn_tool_call_parser == "hermes"


@pytest.mark.parametrize("flags, good, bad", [(mocker_main.FLAGS, "map", "dict"), (vllm_main.FLAGS, "off", "no")])
def test_worker_kv_events_values_are_checked(flags, good, bad, capsys):
    assert parse(flags, ["--kv-events", good], {}).kv_events == good
    with pytest.raises(SystemExit):
        parse(flags, ["--kv-events", bad], {})
    assert "--kv-events" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        parse(flags, [], {flags[0].env_prefix + "KV_EVENTS": bad})
    assert info.value.code == 2
    assert "KV_EVENTS" in capsys.readouterr().err


def test_bad_worker_env_value_names_the_env_var(capsys):
    with pytest.raises(SystemExit):
        parse(mocker_main.FLAGS, [], {"DYN_MOCKER_NUM_GPU_BLOCKS": "lots"})
    err = capsys.readouterr().err
    assert "--num-gpu-blocks" in err and "DYN_MOCKER_NUM_GPU_BLOCKS" in err


def test_mocker_parse_args_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DYN_MOCKER_SPEEDUP_RATIO", "1e6")
    monkeypatch.setenv("DYN_MOCKER_MODEL_NAME", "from-env")
    args = mocker_main.parse_args(["--model-name", "from-flag"])
    assert (args.speedup_ratio, args.model_name, args.exit_with_parent) == (1e6, "from-flag", False)


def test_embedding_worker_parse_args(monkeypatch):
    monkeypatch.setenv("DYN_EMBEDDING_WORKER_THREADS", "4")
    args = embedding_main.parse_args(["--model-name", "minilm", "--exit-with-parent"])
    assert (args.threads, args.model_name, args.exit_with_parent, args.log_format) == (4, "minilm", True, "text")


def test_worker_bool_flags():
    flags = worker_flags("DYN_T_", Option("thing", bool, False, "A switch."))
    assert parse(flags, [], {}).thing is False
    assert parse(flags, ["--thing"], {}).thing is True
    assert parse(flags, ["--no-thing"], {"DYN_T_THING": "yes"}).thing is False
    assert parse(flags, [], {"DYN_T_THING": "yes"}).thing is True


def test_the_worker_helper_is_the_only_flag_style_of_the_workers():
    root = Path(__file__).resolve().parents[2] / "frontend" / "engines"
    for main in ("mocker/main.py", "embedding/main.py", "vllm/main.py"):
        text = (root / main).read_text(encoding="utf-8")
        assert "add_argument(" not in text, main
        assert "add_flags(" in text, main
