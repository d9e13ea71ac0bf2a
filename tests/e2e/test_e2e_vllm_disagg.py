"""Disaggregated prefill/decode on real vLLM engines: ``python -m frontend.vllm --disaggregation-mode prefill``
and ``--disaggregation-mode decode`` on vLLM's CPU build, the prompt's KV pulled by the decode worker from the
prefill worker through vLLM's NixlConnector (NIXL over UCX, TCP on loopback). The mock version of these checks
is ``test_e2e_disaggregation.py``.

One daemon (``--router-mode kv``) and one worker of each role on the tiny random-weight Qwen2 serve the module;
the tests run in file order: greedy requests are disaggregated; the prefill worker is killed and the decode
worker serves the same requests whole, with the same answers; a new prefill worker takes the prefill legs again.
The decode worker keeps no prefix cache, so that after the kill it computes the prompts itself instead of
reusing the KV it received: the answers compared come from two independent prefills.

On a machine with 2 or more CPUs each worker is pinned to a CPU of its own: a prefill worker keeps a core busy
while it holds KV for a decode worker, which on 2 shared cores starves the decode worker's pull.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Callable, NamedTuple

import httpx
import openai
import pytest
from e2e_support import Daemon, VllmWorker, free_port, wait_until
from vllm_support import make_tiny_model, require_nixl, require_vllm

require_vllm()
require_nixl()

MODEL = "tiny-llm"
WORKER_START_S = 300.0
LEASE_TTL_S = 15  # the daemon keeps listing a killed worker this long: the requests right after the kill
WORKER_GONE_S = 60.0
UCX_ON_LOOPBACK = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "lo"}
MAX_TOKENS = 8
GREEDY = {"temperature": 0, "max_tokens": MAX_TOKENS,
          "extra_body": {"ignore_eos": True, "nvext": {"extra_fields": ["worker_id", "timing"]}}}
SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")


class Answer(NamedTuple):
    """What the tests compare of one response."""

    text: str
    logprobs: list[float] | None  # unary requests only
    worker: dict  # nvext.worker_id: prefill_worker_id, decode_worker_id
    ttft_ms: float
    prompt_tokens: int


class Cluster:
    """The daemon and its vLLM workers by role, each worker with its status port (``--system-port``)."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.daemon = Daemon("--router-mode", "kv", mock_workers=0, lease_ttl_s=str(LEASE_TTL_S))
        self.workers: dict[str, VllmWorker] = {}
        self.ports: dict[str, int] = {}
        self.retired: list[VllmWorker] = []
        self.disaggregated: dict[str, Answer] = {}  # the first test's answers, which the second one compares
        self.start_s: dict[str, float] = {}

    def start(self, role: str, cpu_index: int) -> None:
        """Start a worker of ``role`` (``prefill`` or ``decode``), pinned to the ``cpu_index``-th CPU."""
        if role in self.workers:
            self.retired.append(self.workers[role])
        port = free_port()
        no_prefix_cache = ("--no-enable-prefix-caching",) if role == "decode" else ()
        self.workers[role], self.ports[role] = VllmWorker(
            self.daemon.registry_endpoint, self.model_dir, "--disaggregation-mode", role, "--system-port", str(port),
            *no_prefix_cache, env=UCX_ON_LOOPBACK, cpus=_cpu(cpu_index)), port

    def wait_registered(self) -> float:
        """Wait until every worker is in the daemon's /health with its role; the seconds it took."""
        started = time.monotonic()

        def registered() -> bool:
            if any(not worker.alive() for worker in self.workers.values()):
                raise AssertionError("a vLLM worker exited during start-up\n" + self.describe())
            roles = _roles(self.daemon)
            return all(roles.get(self.instance(role)) == role for role in self.workers)

        wait_until(registered, WORKER_START_S, "the vLLM workers to register", interval=0.5,
                   on_timeout=self.describe)
        return time.monotonic() - started

    def instance(self, role: str) -> str | None:
        """The instance id the daemon lists for the worker of ``role`` (None while it is not listed)."""
        prefix = f"{self.workers[role].pid}-"
        return next((i for i in _roles(self.daemon) if i.startswith(prefix)), None)

    def prompt_tokens(self, role: str) -> dict[str, float]:
        """The worker's ``worker_prompt_tokens_total`` by source, from its own /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.ports[role]}/metrics", timeout=10).text
        found = dict(re.findall(r'worker_prompt_tokens_total\{worker_id="[^"]+",source="(\w+)"\} (\S+)', text))
        assert set(found) == set(SOURCES), text
        return {source: float(value) for source, value in found.items()}

    def describe(self) -> str:
        workers = [*self.retired, *self.workers.values()]
        return "\n".join([self.daemon.describe(), *(worker.describe() for worker in workers)])

    def close(self) -> None:
        for worker in [*self.retired, *self.workers.values()]:
            worker.close()
        self.daemon.close()


def _cpu(index: int) -> set[int] | None:
    available = sorted(os.sched_getaffinity(0))
    return {available[index % len(available)]} if len(available) >= 2 else None


def _roles(daemon: Daemon) -> dict[str, str]:
    return {i["instance_id"]: i["disaggregation_mode"] for i in daemon.http.get("/health").json()["instances"]
            if i["model"] == MODEL}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(make_tiny_model(str(tmp_path_factory.mktemp("vllm-model") / MODEL)))
    try:
        cluster.daemon.wait_ready()
        cluster.start("prefill", 0)
        cluster.start("decode", 1)
        cluster.start_s["first two workers"] = cluster.wait_registered()
        yield cluster
    finally:
        print("\nvLLM disaggregation timings (s):", {key: round(value, 1) for key, value in cluster.start_s.items()})
        cluster.close()


@pytest.fixture
def on_failure(cluster, request):
    """Print the daemon's and the workers' logs when the test fails."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:  # the call's report is counted before teardown
        print(cluster.describe())


# ---- the greedy requests every phase sends ---------------------------------------------------------------


def _prompt(topic: str) -> str:
    return f"About {topic}: " + " ".join(f"{topic}{i}" for i in range(40))


def _chat(client: openai.OpenAI, topic: str) -> Answer:
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": _prompt(topic)}],
                                              logprobs=True, **GREEDY)
    nvext, choice = response.model_extra["nvext"], response.choices[0]
    return Answer(choice.message.content, [entry.logprob for entry in choice.logprobs.content], nvext["worker_id"],
                  nvext["timing"]["ttft_ms"], response.usage.prompt_tokens)


def _chat_streamed(client: openai.OpenAI, topic: str) -> Answer:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": _prompt(topic)}], stream=True,
        stream_options={"include_usage": True}, **GREEDY))
    nvext = next(chunk.model_extra["nvext"] for chunk in chunks if (chunk.model_extra or {}).get("nvext"))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return Answer(text, None, nvext["worker_id"], nvext["timing"]["ttft_ms"], chunks[-1].usage.prompt_tokens)


def _completion(client: openai.OpenAI, topic: str) -> Answer:
    response = client.completions.create(model=MODEL, prompt=_prompt(topic), logprobs=1, **GREEDY)
    nvext = response.model_extra["nvext"]
    return Answer(response.choices[0].text, list(response.choices[0].logprobs.token_logprobs), nvext["worker_id"],
                  nvext["timing"]["ttft_ms"], response.usage.prompt_tokens)


def _completion_streamed(client: openai.OpenAI, topic: str) -> Answer:
    chunks = list(client.completions.create(model=MODEL, prompt=_prompt(topic), stream=True,
                                            stream_options={"include_usage": True}, **GREEDY))
    nvext = next(chunk.model_extra["nvext"] for chunk in chunks if (chunk.model_extra or {}).get("nvext"))
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    return Answer(text, None, nvext["worker_id"], nvext["timing"]["ttft_ms"], chunks[-1].usage.prompt_tokens)


REQUESTS: dict[str, Callable[[openai.OpenAI, str], Answer]] = {
    "chat": _chat, "chat streamed": _chat_streamed, "completion": _completion,
    "completion streamed": _completion_streamed}


def _greedy_answers(cluster: Cluster, round_name: str) -> dict[str, Answer]:
    """One request of each kind, a prompt of its own each (named by ``round_name``)."""
    client = cluster.daemon.client(timeout=120.0)
    answers = {kind: ask(client, f"{round_name}{kind.replace(' ', '')}") for kind, ask in REQUESTS.items()}
    for kind, answer in answers.items():
        assert answer.text and answer.prompt_tokens > 40, (kind, answer)
    return answers


def _grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {source: after[source] - before[source] for source in SOURCES}


# ---- the tests, in file order ----------------------------------------------------------------------------


def test_prompt_kv_moves_from_the_prefill_worker_to_the_decode_worker(cluster, on_failure):
    daemon = cluster.daemon
    prefill, decode = cluster.instance("prefill"), cluster.instance("decode")
    transfers = daemon.counter("disagg_transfers_total", model=MODEL)
    decode_before, prefill_before = cluster.prompt_tokens("decode"), cluster.prompt_tokens("prefill")

    answers = _greedy_answers(cluster, "first")
    for kind, answer in answers.items():
        assert answer.worker == {"prefill_worker_id": prefill, "decode_worker_id": decode}, kind
    assert daemon.counter("disagg_transfers_total", model=MODEL) == transfers + len(answers)

    prompt_tokens = sum(answer.prompt_tokens for answer in answers.values())
    # the stat logger records a step after its outputs went out: wait for the last step's numbers
    wait_until(lambda: sum(_grown(decode_before, cluster.prompt_tokens("decode")).values()) >= prompt_tokens, 10.0,
               "the decode worker to count the prompt tokens")
    on_decode = _grown(decode_before, cluster.prompt_tokens("decode"))
    assert on_decode == {"local_compute": 0, "local_cache_hit": 0, "external_kv_transfer": prompt_tokens}
    on_prefill = _grown(prefill_before, cluster.prompt_tokens("prefill"))
    assert on_prefill["local_compute"] + on_prefill["local_cache_hit"] == prompt_tokens, on_prefill
    assert on_prefill["external_kv_transfer"] == 0, on_prefill
    cluster.disaggregated = answers
    print("\ndisaggregated TTFT (ms):", {kind: answer.ttft_ms for kind, answer in answers.items()})


def test_without_its_prefill_worker_the_decode_worker_serves_the_same_answers(cluster, on_failure):
    """The prefill worker (its process group: worker and engine core) is SIGKILLed. While the daemon still lists
    it (its lease), requests fall back: the decode worker serves them whole, computing the prompts itself, and
    greedy decoding gives the disaggregated answers."""
    assert cluster.disaggregated, "needs the answers of the test before"
    daemon, victim = cluster.daemon, cluster.workers["prefill"]
    victim_instance, decode = cluster.instance("prefill"), cluster.instance("decode")
    fallbacks = {reason: daemon.counter("disagg_fallbacks_total", model=MODEL, reason=reason)
                 for reason in ("no_prefill_worker", "prefill_failed")}
    decode_before = cluster.prompt_tokens("decode")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.process.wait(15)
    killed = time.monotonic()

    answers = _greedy_answers(cluster, "first")
    assert victim_instance in _roles(daemon), "the daemon dropped the killed worker before the requests ended"
    for kind, answer in answers.items():
        expected = cluster.disaggregated[kind]
        assert answer.worker == {"prefill_worker_id": decode, "decode_worker_id": decode}, kind
        assert (answer.text, answer.prompt_tokens) == (expected.text, expected.prompt_tokens), kind
        if expected.logprobs is not None:
            assert answer.logprobs == pytest.approx(expected.logprobs, abs=1e-3), kind
    grown = {reason: daemon.counter("disagg_fallbacks_total", model=MODEL, reason=reason) - before
             for reason, before in fallbacks.items()}
    # no_prefill_worker once the daemon saw the connection drop; prefill_failed for a leg sent before that
    assert sum(grown.values()) == len(answers), grown
    prompt_tokens = sum(answer.prompt_tokens for answer in answers.values())
    wait_until(lambda: _grown(decode_before, cluster.prompt_tokens("decode"))["local_compute"] >= prompt_tokens,
               10.0, "the decode worker to count the prompt tokens it computed")
    assert _grown(decode_before, cluster.prompt_tokens("decode"))["external_kv_transfer"] == 0

    wait_until(lambda: victim_instance not in _roles(daemon), WORKER_GONE_S, "the daemon to drop the prefill worker",
               interval=0.25)
    cluster.start_s["killed prefill worker dropped"] = time.monotonic() - killed
    assert _chat(daemon.client(), "firstchat").text == answers["chat"].text  # a model without prefill workers
    assert cluster.workers["decode"].alive()
    print("\nfallback fallbacks by reason:", grown)
    print("whole-request TTFT on the decode worker (ms):", {kind: a.ttft_ms for kind, a in answers.items()})


def test_a_new_prefill_worker_takes_the_prefill_legs_again(cluster, on_failure):
    daemon = cluster.daemon
    cluster.start("prefill", 0)
    cluster.start_s["replacement prefill worker"] = cluster.wait_registered()
    prefill, decode = cluster.instance("prefill"), cluster.instance("decode")
    transfers = daemon.counter("disagg_transfers_total", model=MODEL)
    decode_before = cluster.prompt_tokens("decode")

    answers = _greedy_answers(cluster, "second")
    for kind, answer in answers.items():
        assert answer.worker == {"prefill_worker_id": prefill, "decode_worker_id": decode}, kind
    assert daemon.counter("disagg_transfers_total", model=MODEL) == transfers + len(answers)
    wait_until(lambda: _grown(decode_before, cluster.prompt_tokens("decode"))["external_kv_transfer"] > 0, 10.0,
               "the decode worker to count transferred prompt tokens")
    assert _grown(decode_before, cluster.prompt_tokens("decode"))["local_compute"] == 0
