"""State that outlives one frontend: two daemons (each with its own mock workers) sharing one Responses store on
PostgreSQL (Debian's postgresql, started by the test) and one media directory, as frontends behind a load
balancer would; plus the store's start-up error, its 503 once the database is gone, and its URL's password kept
out of --dump-config and of every message."""

from __future__ import annotations

import os
import subprocess
import sys

import openai
import pytest
from e2e_support import MODEL, REPO, error_of, free_port
from postgres_support import PASSWORD, postgres  # noqa: F401

IMAGE = "tiny-image"


def _start_two(start_daemon, *flags: str, **kwargs):
    return start_daemon(*flags, mock_workers=1, **kwargs), start_daemon(*flags, mock_workers=1, **kwargs)


def test_a_response_stored_through_one_frontend_is_continued_fetched_and_deleted_through_the_other(
        start_daemon, postgres):  # noqa: F811
    first, second = _start_two(start_daemon, "--responses-store-url", postgres.url)
    with first.client() as one, second.client() as other:
        stored = one.responses.create(model=MODEL, input="Tell me about kites.", max_output_tokens=8)
        follow_up = other.responses.create(model=MODEL, input="And about boats?", max_output_tokens=8,
                                           previous_response_id=stored.id)
        assert follow_up.previous_response_id == stored.id and follow_up.status in ("completed", "incomplete")
        # the second turn's prompt holds the first turn: it is longer than the first turn's whole conversation
        assert follow_up.usage.input_tokens > stored.usage.input_tokens + stored.usage.output_tokens
        fetched = other.responses.retrieve(stored.id)
        assert fetched.id == stored.id and fetched.output[0].content[0].text == stored.output_text
        assert one.responses.retrieve(follow_up.id).previous_response_id == stored.id
        other.responses.delete(stored.id)
        for client in (one, other):
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(stored.id)
        with pytest.raises(openai.BadRequestError) as caught:
            one.responses.create(model=MODEL, input="Again?", previous_response_id=stored.id, max_output_tokens=4)
        assert caught.value.code == "previous_response_not_found"
        unstored = one.responses.create(model=MODEL, input="Forget me.", max_output_tokens=4, store=False)
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(unstored.id)

        postgres.stop()  # the database goes away: store operations are a 503, answers without it still work
        gone = second.http.get(f"/v1/responses/{follow_up.id}")
        assert gone.status_code == 503 and error_of(gone)["code"] == "store_unavailable"
        continued = first.http.post("/v1/responses", json={"model": MODEL, "input": "More?", "max_output_tokens": 4,
                                                            "previous_response_id": follow_up.id})
        assert continued.status_code == 503
        assert one.responses.create(model=MODEL, input="Still there?", max_output_tokens=4).status != "failed"
        for daemon in (first, second):
            assert PASSWORD not in daemon.log_text(100_000)


def test_an_image_url_from_one_frontend_is_served_by_the_other(start_daemon, tmp_path):
    first, second = _start_two(start_daemon, "--media-store-path", str(tmp_path / "media"),
                               extra_models=("images",))
    with first.client() as one:
        response = one.images.generate(model=IMAGE, prompt="A red kite", size="64x48", response_format="url")
    [url] = [item.url for item in response.data]
    assert url.startswith(first.base_url + "/v1/media/")
    served = second.http.get(url.replace(first.base_url, second.base_url))
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == first.http.get(url).content and served.content.startswith(b"\x89PNG")


def test_an_unreachable_database_is_a_start_up_error_without_the_password(postgres):  # noqa: F811
    unreachable = postgres.url.replace(f":{postgres.port}/", ":1/")
    argv = [sys.executable, "-m", "frontend", "--http-host", "127.0.0.1", "--http-port", str(free_port()),
            "--mock-workers", "0", "--mock-extra-models", "none"]
    done = subprocess.run(argv, cwd=REPO, env={**_env(), "DYN_RESPONSES_STORE_URL": unreachable},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "postgresql://postgres:***@127.0.0.1:1/postgres" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    dump = subprocess.run([*argv, "--responses-store-url", postgres.url, "--dump-config"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and 'responses_store_url = "***"' in dump.stdout and PASSWORD not in dump.stdout


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("DYN_")}
