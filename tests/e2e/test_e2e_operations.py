"""Operations end to end: TLS and mutual TLS, /metrics across processes, sd_notify, graceful shutdown."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from e2e_support import MODEL, REPO, Daemon, wait_until

from frontend.gateway.settings import DRAINING_FLAG
from frontend.observability.metrics import dynamo_buckets

CERTS_SCRIPT = REPO / "scripts" / "gen-certs"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    subprocess.run([sys.executable, str(CERTS_SCRIPT), str(out)], check=True, capture_output=True)
    return out


def trust(certs: Path, *, client_cert: bool = False) -> ssl.SSLContext:
    """A client context trusting the test CA (optionally presenting the test client certificate)."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    return context


def tls_daemon(certs: Path, *extra: str, **kwargs) -> Daemon:
    server = Daemon("--tls-cert-path", str(certs / "server.pem"), "--tls-key-path", str(certs / "server.key"),
                    *extra, **kwargs)
    try:
        server.base_url = f"https://localhost:{server.http_port}"
        server.http.close()
        context = trust(certs, client_cert="--tls-client-ca-path" in extra)
        server.http = httpx.Client(base_url=server.base_url, verify=context, timeout=30)
    except BaseException:
        server.close()
        raise
    return server


def test_https_with_the_openai_sdk_and_http2(certs):
    server = tls_daemon(certs)
    try:
        server.wait_ready()
        with httpx.Client(verify=trust(certs), timeout=30) as http_client:
            client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", http_client=http_client)
            reply = client.chat.completions.create(model=MODEL, max_tokens=5, extra_body={"ignore_eos": True},
                                                   messages=[{"role": "user", "content": "hi"}])
        assert reply.usage.completion_tokens == 5
        with httpx.Client(verify=trust(certs), http2=True) as h2:
            response = h2.get(server.base_url + "/v1/models")
        assert response.status_code == 200 and response.http_version == "HTTP/2"
        with pytest.raises(httpx.ConnectError):  # the system trust store does not know our CA
            httpx.get(server.base_url + "/live")
    finally:
        server.close()


def _tls12_only(certs: Path) -> ssl.SSLContext:
    context = trust(certs)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def test_minimum_tls_version(certs):
    for minimum, accepted in (("1.2", True), ("1.3", False)):
        server = tls_daemon(certs, "--tls-min-version", minimum, mock_workers=0)
        try:
            server.wait_ready()
            with httpx.Client(verify=_tls12_only(certs)) as old_client:
                if accepted:
                    assert old_client.get(server.base_url + "/live").status_code == 200
                else:
                    with pytest.raises(httpx.ConnectError):
                        old_client.get(server.base_url + "/live")
        finally:
            server.close()


def test_mutual_tls_accepts_client_certificates_only(certs):
    server = tls_daemon(certs, "--tls-client-ca-path", str(certs / "ca.pem"), mock_workers=0)
    try:
        server.wait_ready()
        assert server.http.get("/live").status_code == 200  # presents client.pem
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(server.base_url + "/live", verify=trust(certs))
    finally:
        server.close()


@pytest.mark.parametrize("flags, message", [
    (["--tls-cert-path", "{certs}/server.pem"], "--tls-cert-path and --tls-key-path must be given together"),
    (["--tls-key-path", "{certs}/server.key"], "--tls-cert-path and --tls-key-path must be given together"),
    (["--tls-cert-path", "{certs}/server.pem", "--tls-key-path", "{certs}/client.key"], "is not the key of"),
    (["--tls-cert-path", "{certs}/missing.pem", "--tls-key-path", "{certs}/server.key"], "cannot read"),
    (["--tls-cert-path", "{certs}/server.key", "--tls-key-path", "{certs}/server.key"], "is not a PEM certificate"),
])
def test_bad_tls_configuration_refuses_to_start(certs, flags, message):
    argv = [sys.executable, "-m", "frontend", *(f.format(certs=certs) for f in flags)]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def _scrape(server: Daemon) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in server.http.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_are_summed_over_http_worker_processes(start_daemon):
    server = start_daemon("--workers", "2")
    count = 24
    for _ in range(count):  # a new connection each time, so both worker processes serve some
        with httpx.Client(base_url=server.base_url) as fresh:
            response = fresh.post("/v1/chat/completions", json={
                "model": MODEL, "max_tokens": 3, "ignore_eos": True, "stream": True,
                "messages": [{"role": "user", "content": "count me"}]})
            assert response.status_code == 200
    bad = httpx.post(server.base_url + "/v1/chat/completions", content=b"{nope")
    assert bad.status_code == 400
    success = (f'dynamo_frontend_requests_total{{model="{MODEL}",endpoint="chat_completions",request_type="stream",'
               f'status="success",error_type=""}}')
    time.sleep(1.3)  # one snapshot interval
    for _ in range(6):  # whichever process answers, the totals are the same
        values = _scrape(server)
        assert values[success] == count
        assert values[f'dynamo_frontend_output_tokens_total{{model="{MODEL}"}}'] == 3 * count
        assert values[f'dynamo_frontend_time_to_first_token_seconds_count{{model="{MODEL}"}}'] == count
        # as in Dynamo, a first output that carries several tokens (the mock's often does) gives no ITL
        itl_count = values.get(f'dynamo_frontend_inter_token_latency_seconds_count{{model="{MODEL}"}}', 0)
        assert 0 <= itl_count <= 2 * count
        assert values.get(f'dynamo_frontend_inter_token_latency_seconds_sum{{model="{MODEL}"}}', 0) <= itl_count
        assert values['dynamo_frontend_requests_total{model="",endpoint="chat_completions",request_type="unary",'
                      'status="error",error_type="validation"}'] == 1
        assert values[f'dynamo_frontend_inflight_requests{{model="{MODEL}"}}'] == 0
        _check_dynamo_names(values, count)


def _check_dynamo_names(values: dict[str, float], count: int) -> None:
    """Dynamo's names after ``count`` streamed requests (and one malformed one) over 2 HTTP processes: counters
    summed, model gauges and per-worker last values not (one value, whichever process answers)."""
    model = f'{{model="{MODEL}"}}'
    assert values[f'dynamo_frontend_requests_started_total{{model="{MODEL}",endpoint="chat_completions",'
                  'request_type="stream"}'] == count
    assert values['dynamo_frontend_failures_total{class="InvalidRequest",reason="request.invalid"}'] == 1
    assert values[f"dynamo_frontend_active_requests{model}"] == 0
    assert values[f"dynamo_frontend_model_ready{model}"] == 1
    assert values[f"dynamo_frontend_model_context_length{model}"] == 32768
    assert values[f"dynamo_frontend_model_kv_cache_block_size{model}"] == 16
    assert values[f"dynamo_frontend_model_total_kv_blocks{model}"] == 65536
    assert values[f"dynamo_frontend_model_max_num_seqs{model}"] == 256
    assert values[f"dynamo_frontend_model_migration_limit{model}"] == 3
    for name in ("time_to_first_token_seconds", "inter_token_latency_seconds", "input_sequence_tokens"):
        last = [value for key, value in values.items() if key.startswith(f"dynamo_frontend_worker_last_{name}{{")]
        # one per mock worker (an ITL only from a worker that sent a request's tokens in several outputs)
        assert len(last) == 2 or name == "inter_token_latency_seconds" and len(last) < 2, (name, last)
        assert all(0 <= value < (100 if name == "input_sequence_tokens" else 5) for value in last), (name, last)


def _bounds(text: str, name: str) -> tuple[float, ...]:
    """The finite ``le`` bounds of the first series of histogram ``name``."""
    series = [line for line in text.splitlines() if line.startswith(f"dynamo_frontend_{name}_bucket{{")]
    first = series[0].split(",le=")[0]
    return tuple(float(line.split('le="')[1].split('"')[0]) for line in series
                 if line.startswith(first + ",") and '"+Inf"' not in line)


def test_dynamo_bucket_variables_and_kv_hit_rate(start_daemon):
    """DYN_METRICS_* set the buckets as in Dynamo (a bad value: a warning and Dynamo's defaults); KV routing decisions
    give kv_hit_rate; the worker's last inter-token latency is shown."""
    server = start_daemon("--router-mode", "kv", mock_workers=1, speedup="1",
                          env={"DYN_METRICS_TTFT_COUNT": "5", "DYN_METRICS_ITL_MIN": "fast"})
    prompt = [{"role": "user", "content": "The same long prefix about lighthouses and the sea, " * 12}]
    for _ in range(3):
        answer = server.http.post("/v1/chat/completions", json={"model": MODEL, "messages": prompt, "max_tokens": 4})
        assert answer.status_code == 200, answer.text
    text = server.http.get("/metrics").text
    values = _scrape(server)
    assert _bounds(text, "time_to_first_token_seconds") == dynamo_buckets(0.001, 480.0, 5)
    assert _bounds(text, "inter_token_latency_seconds") == dynamo_buckets(0.001, 80.0, 20)
    assert "cannot parse DYN_METRICS_ITL_MIN='fast'" in server.log_text()
    assert values[f'dynamo_frontend_kv_hit_rate_count{{model="{MODEL}"}}'] == 3
    assert values[f'dynamo_frontend_kv_hit_rate_sum{{model="{MODEL}"}}'] > 1  # the 2nd and 3rd found the prefix
    itl = [value for key, value in values.items() if key.startswith("dynamo_frontend_worker_last_inter_token")]
    assert len(itl) == 1 and 0 < itl[0] < 1


def test_a_request_refused_because_every_worker_is_busy_counts_as_a_rejection(start_daemon):
    server = start_daemon("--active-decode-blocks-threshold", "1e-7", mock_workers=1, speedup="1")
    prompt = [{"role": "user", "content": "tell me a long story about harbors " * 8}]
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "max_tokens": 2000, "ignore_eos": True, "stream": True, "messages": prompt}) as stream:
            lines = stream.iter_lines()  # kept: a closed iterator would close the stream
            next(line for line in lines if line.startswith("data: "))  # the stream holds its KV blocks
            refused = server.http.post("/v1/chat/completions", json={"model": MODEL, "messages": prompt,
                                                                       "max_tokens": 1})
    assert refused.status_code == 529, refused.text
    values = _scrape(server)
    assert values[f'dynamo_frontend_model_rejection_total{{model="{MODEL}",endpoint="chat_completions"}}'] == 1
    assert values['dynamo_frontend_failures_total{class="CapacityExhausted",reason="capacity.pool_exhausted"}'] == 1
    assert values[f'dynamo_frontend_requests_total{{model="{MODEL}",endpoint="chat_completions",'
                  'request_type="unary",status="error",error_type="overload"}'] == 1


def test_metrics_prefix_and_router_gauges(start_daemon):
    server = start_daemon("--metrics-prefix", "edge")
    text = server.http.get("/metrics").text
    assert "edge_model_workers" in text and "edge_worker_active_requests" in text
    assert "dynamo_frontend_" not in text


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def has(self, field: str) -> bool:
        return any(field in message.splitlines() for message in self.messages)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def test_sd_notify_ready_watchdog_and_stopping(tmp_path):
    notify = NotifySocket(tmp_path)
    server = Daemon(mock_workers=1, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"})
    try:
        wait_until(lambda: notify.has("READY=1"), 30, "READY=1", on_timeout=server.describe)
        assert server.http.get("/live").status_code == 200  # READY means it serves
        wait_until(lambda: notify.has("WATCHDOG=1"), 5, "a watchdog ping")
        os.kill(server.pid, signal.SIGTERM)
        assert server.process.wait(30) == 0
        assert notify.has("STOPPING=1")
    finally:
        server.close()
        notify.close()


def test_sigterm_lets_an_inflight_stream_finish(start_daemon):
    server = start_daemon(mock_workers=0)
    server.start_mocker("--model-name", "slowpoke", speedup="1")
    server.wait_model("slowpoke")
    chunks: list[str] = []
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json={
                "model": "slowpoke", "max_tokens": 60, "ignore_eos": True, "stream": True,
                "messages": [{"role": "user", "content": "a long answer please"}]}) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    chunks.append(line)
                    break
            os.kill(server.pid, signal.SIGTERM)
            started = time.monotonic()
            chunks.extend(line for line in lines if line.startswith("data: "))
    assert chunks[-1] == "data: [DONE]"
    assert time.monotonic() - started > 0.2  # it really was still streaming when SIGTERM came
    assert server.process.wait(30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/live")


def test_live_and_health_answer_503_while_the_daemon_drains(start_daemon, tmp_path):
    """Once the daemon drains (its SIGTERM handler creates the draining flag, then Granian closes its listener and
    idle connections) every HTTP process answers /live and /health with Dynamo's 503 ``shutting_down``; a request
    that still reaches one is refused, while /v1/models keeps answering. The flag is made here by hand, so that
    the listener stays open to look."""
    server = start_daemon("--run-dir", str(tmp_path), "--workers", "2", mock_workers=1)
    assert server.http.get("/live").status_code == 200
    (tmp_path / DRAINING_FLAG).touch()

    def both_draining() -> bool:  # fresh connections: either HTTP process answers
        return all(httpx.get(server.base_url + "/live").status_code == 503 for _ in range(6))

    wait_until(both_draining, 5, "/live to answer 503")
    live = httpx.get(server.base_url + "/live")
    assert live.json() == {"status": "shutting_down", "message": "Service is shutting down"}
    health = httpx.get(server.base_url + "/health")
    assert health.status_code == 503 and health.json()["status"] == "shutting_down"
    assert [i["model"] for i in health.json()["instances"]] == [MODEL]
    refused = httpx.post(server.base_url + "/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert httpx.get(f"{server.base_url}/v1/models/{MODEL}").status_code == 200


def _session_pids(session_id: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session_id:
                    pids.add(int(entry))
            except OSError:
                continue
    return pids


def test_no_child_outlives_a_sigkilled_daemon(start_daemon):
    server = start_daemon("--workers", "2")
    children = _session_pids(server.pid) - {server.pid}
    assert len(children) >= 6  # registry, indexer, tokenizer, 2 mockers, 2 HTTP workers
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(10)

    def all_gone() -> bool:
        alive = set()
        for pid in children:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.add(pid)
        return not alive

    def survivors() -> str:
        rows = []
        for pid in children:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
                title = Path(f"/proc/{pid}/comm").read_text().strip()
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                threads = sorted(f"{task.name}:{(task / 'comm').read_text().strip()}:{(task / 'wchan').read_text()}"
                                 for task in Path(f"/proc/{pid}/task").iterdir())
                rows.append(f"{pid} ({title}, state {stat}): {command!r}; threads {threads}")
            except OSError:
                continue
        return "\n".join(rows) + "\n" + server.log_text()

    wait_until(all_gone, 20, "every child of the killed daemon to exit", on_timeout=survivors)
