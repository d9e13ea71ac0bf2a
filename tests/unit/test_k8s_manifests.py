"""config/k8s/: every manifest is valid for a current Kubernetes (kubernetes-validate, strict), and what the
manifests tell the frontend and the worker is what they accept: the ConfigMap is a config file the daemon loads,
the worker's arguments parse, the probes and the grace period match the daemon's endpoints and shutdown."""

from __future__ import annotations

import argparse
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from frontend.config.loader import load_config
from frontend.engines.vllm.main import FLAGS as VLLM_WORKER_FLAGS
from frontend.worker.cli import add_flags

K8S_DIR = Path(__file__).resolve().parents[2] / "config" / "k8s"
MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))


def resources() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource(kind: str, name: str) -> dict:
    return next(r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name)


def test_the_manifests_are_there():
    assert {path.name for path in MANIFESTS} >= {"etcd.yaml", "frontend.yaml", "vllm-worker.yaml"}


@pytest.mark.parametrize("doc", resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_each_resource_is_valid_for_the_latest_kubernetes(doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.fixture(scope="module")
def frontend_config(tmp_path_factory):
    config_map = resource("ConfigMap", "dynamo-frontend")
    path = tmp_path_factory.mktemp("k8s") / "frontend.toml"
    path.write_text(config_map["data"]["frontend.toml"])
    config, _ = load_config(["--config", str(path)], {})
    return config


def frontend_container() -> dict:
    return resource("Deployment", "dynamo-frontend")["spec"]["template"]["spec"]["containers"][0]


def test_the_frontend_config_map_is_a_config_file_the_daemon_loads(frontend_config):
    assert frontend_config.discovery.discovery_backend == "etcd"
    assert frontend_config.discovery.etcd_endpoints == "http://etcd:2379"
    assert frontend_config.http.http_host == "0.0.0.0"


def test_probes_and_scraping_match_the_daemons_endpoints(frontend_config):
    container = frontend_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == frontend_config.http.http_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"  # 503 without workers and while draining
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    annotations = resource("Deployment", "dynamo-frontend")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == frontend_config.http.http_port


def test_the_grace_period_covers_the_graceful_shutdown(frontend_config):
    pod = resource("Deployment", "dynamo-frontend")["spec"]["template"]["spec"]
    pre_stop = frontend_container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > frontend_config.http.graceful_shutdown_timeout + pre_stop


def test_the_media_store_is_on_the_shared_volume(frontend_config):
    mounts = {m["name"]: m["mountPath"] for m in frontend_container()["volumeMounts"]}
    assert frontend_config.media.media_store_path == mounts["media"]
    claim = resource("PersistentVolumeClaim", "dynamo-frontend-media")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_worker_arguments_parse_and_match_the_frontends(frontend_config):
    container = resource("Deployment", "vllm-worker")["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:3] == ["python", "-m", "frontend.vllm"]
    parser = argparse.ArgumentParser()
    add_flags(parser, VLLM_WORKER_FLAGS)
    args, engine_args = parser.parse_known_args(command[3:])
    assert engine_args == ["--model=Qwen/Qwen3-0.6B"]  # vLLM's own
    assert args.discovery_backend == frontend_config.discovery.discovery_backend
    assert args.etcd_endpoints == frontend_config.discovery.etcd_endpoints
    assert args.namespace == frontend_config.discovery.namespace
    assert args.host == "$(POD_IP)" and {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} \
        in container["env"]
    pod = resource("Deployment", "vllm-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > args.drain_timeout_s
