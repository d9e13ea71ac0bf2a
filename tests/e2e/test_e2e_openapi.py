"""GET /openapi.json and GET /docs on the real daemon, and Swagger UI's "Try it out" in a real headless Chromium."""

from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path

import pytest
from browser_support import chromium, require_chromium
from e2e_support import MODEL
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from frontend.http import openapi, routes

SCREENSHOT = Path(tempfile.gettempdir()) / "dynamo-frontend-docs-try-it-out.png"
CHAT_OP = "operations-chat-createChatCompletion"


@pytest.fixture(scope="module")
def spec(daemon) -> dict:
    response = daemon.http.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-cache"
    return response.json()


def test_served_spec_is_valid_and_the_generated_one(spec):
    validate(spec)
    assert spec == json.loads(routes.spec_bytes())
    assert spec["servers"] == [{"url": "/", "description": "This server"}]


def _check(spec: dict, path: str, method: str, status: int, body) -> None:
    response = spec["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    OAS31Validator({**schema, "components": spec["components"]}).validate(body)


def test_real_responses_match_the_spec(daemon, spec):
    """Every JSON body the daemon answers validates against the schema the spec gives for it."""
    for path, item in spec["paths"].items():
        if "get" not in item or "{" in path:  # a path with a parameter is checked by its own tests
            continue
        response = daemon.http.get(path)
        assert response.status_code == 200, (path, response.text)
        content = item["get"]["responses"]["200"]["content"]
        content_type = response.headers["content-type"]
        assert content_type in content, (path, content_type, list(content))
        if content_type == "application/json":
            _check(spec, path, "get", 200, response.json())
    # the documentation Structs decode /health strictly (forbid_unknown_fields): a new field needs a doc update
    openapi.msgspec.json.decode(daemon.http.get("/health").content, type=openapi.HealthReport)

    chat = daemon.http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "logprobs": True,
        "top_logprobs": 2})
    assert chat.status_code == 200, chat.text
    _check(spec, "/v1/chat/completions", "post", 200, chat.json())
    completion = daemon.http.post("/v1/completions", json={"model": MODEL, "prompt": "Once", "max_tokens": 5,
                                                           "logprobs": 1})
    assert completion.status_code == 200, completion.text
    _check(spec, "/v1/completions", "post", 200, completion.json())
    for body, status in (({"model": "no-such-model", "prompt": "x"}, 404), ({"model": MODEL}, 400)):
        error = daemon.http.post("/v1/completions", json=body)
        assert error.status_code == status, error.text
        _check(spec, "/v1/completions", "post", status, error.json())


def test_request_examples_are_served_as_documented(daemon, spec):
    """Each request example of the spec is a request the daemon answers with 200 (Try it out's defaults)."""
    for path, item in spec["paths"].items():
        body = item.get("post", {}).get("requestBody")
        if not body:
            continue
        for name, example in body["content"]["application/json"].get("examples", {}).items():
            response = daemon.http.post(path, json=example["value"])
            assert response.status_code == 200, (path, name, response.text)


def test_docs_page_and_assets(daemon):
    page = daemon.http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.lower().replace("http-equiv", "")  # every URL relative: no CDN, no host
    assets = openapi.ASSETS_PATH
    assert f'src="{assets.lstrip("/")}swagger-ui-bundle.js"' in page.text
    for name, content_type in openapi.ASSET_TYPES.items():
        asset = daemon.http.get(assets + name)
        assert asset.status_code == 200, name
        assert asset.headers["content-type"] == content_type
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert asset.content == (openapi.SWAGGER_UI_DIR / name).read_bytes()
    init = daemon.http.get("/docs/swagger-initializer.js")
    assert init.status_code == 200 and init.headers["content-type"].startswith("text/javascript")
    slash = daemon.http.get("/docs/", follow_redirects=False)
    assert slash.status_code == 301 and slash.headers["location"] == "../docs"


def _raw_status(port: int, target: str) -> int:
    """The status of ``GET target`` sent byte for byte (an HTTP client would normalise the ``..``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(64).decode("latin-1")
    return int(head.split(" ", 2)[1])


@pytest.mark.parametrize("target", [
    "{assets}../../setup.cfg", "{assets}%2e%2e/%2e%2e/setup.cfg", "{assets}..%2f..%2fsetup.cfg",
    "/docs/../setup.cfg", "/docs/%2e%2e/frontend/__init__.py", "{assets}index.html",
    "{assets}swagger-ui-bundle.js.map", "/docs//etc/passwd", "/docs/swagger-ui-0.0.0/swagger-ui.css",
])
def test_no_file_outside_the_allow_list(daemon, target):
    assert _raw_status(daemon.http_port, target.format(assets=openapi.ASSETS_PATH)) == 404


@pytest.fixture
def browser(tmp_path, monkeypatch):
    require_chromium()
    monkeypatch.setenv("SE_OFFLINE", "true")
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def test_swagger_ui_try_it_out_chat_completion(daemon, spec, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.monotonic()
    wait = WebDriverWait(browser, 15)

    def find(css: str, within=None):
        return wait.until(lambda _: (within or browser).find_element(By.CSS_SELECTOR, css))

    try:
        browser.get(daemon.base_url + "/docs")
        # every operation of the spec is rendered, under its tag
        operation_count = sum(len(item) for item in spec["paths"].values())
        wait.until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) == operation_count)
        chat = find("#" + CHAT_OP)
        assert chat.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path") == \
            "/v1/chat/completions"

        find(".opblock-summary-control", chat).click()
        find(".try-out__btn", chat).click()
        body = find("textarea.body-param__text", chat)
        body.send_keys(Keys.CONTROL, "a")
        body.send_keys(Keys.DELETE)
        body.send_keys(json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello from Chromium"}],
                                   "max_tokens": 5}))
        find("button.execute", chat).click()

        status = find(".live-responses-table .response .response-col_status", chat)
        wait.until(lambda _: status.text.strip())
        assert status.text.strip() == "200", status.text
        code = find(".live-responses-table .response .response-col_description .highlight-code pre", chat)
        result = json.loads(code.text)
        assert result["object"] == "chat.completion", result
        assert result["model"] == MODEL
        assert result["usage"]["completion_tokens"] <= 5
        assert result["choices"][0]["message"]["role"] == "assistant"
        request_url = find(".request-url pre", chat).text.strip()
        assert request_url == daemon.base_url + "/v1/chat/completions", request_url

        # the page used nothing but this server, and logged no error (a CSP violation would be one)
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(url.startswith(daemon.base_url + "/") for url in resources), resources
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors

        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", code)
        browser.execute_script("window.scrollBy(0, -420)")
        browser.save_screenshot(str(SCREENSHOT))
    except (AssertionError, TimeoutException):
        browser.save_screenshot(str(SCREENSHOT.with_name(SCREENSHOT.stem + "-failure.png")))
        raise
    assert time.monotonic() - start < 30
