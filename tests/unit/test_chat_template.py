"""Unit tests for frontend.tokenizer.chat_template (HF-compatible chat-template rendering)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # no packaging config yet: make `frontend` importable from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from frontend.protocol.errors import ConfigError, TemplateError  # noqa: E402
from frontend.tokenizer.chat_template import ChatTemplate  # noqa: E402

TINY_MODEL_DIR = REPO_ROOT / "config" / "models" / "tiny"

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

STRICT_ROLES = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message.role not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message.role) }}"
    "{% endif %}"
    "[{{ message.role }}]{{ message.content }}"
    "{% endfor %}"
    "{{ eos_token }}"
)

THINKING = (
    "{% for message in messages %}{{ message.role }}: {{ message.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:"
    "{% if enable_thinking is defined and enable_thinking is false %} <think></think>{% endif %}"
    "{% endif %}"
)

PARTS = (
    "{% for message in messages %}"
    "{% if message.content is string %}{{ message.content }}"
    "{% else %}{% for part in message.content %}{% if part.type == 'text' %}{{ part.text }}{% else %}<img>"
    "{% endif %}{% endfor %}{% endif %}|"
    "{% endfor %}"
)

USER_HELLO = [{"role": "user", "content": "Hello"}]


def write_model_dir(path: Path, config: dict | None = None, **files: str) -> Path:
    """Create a fake HF model directory with tokenizer_config.json (if given) and other files by name."""
    path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    for name, text in files.items():
        (path / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return path


# --- rendering -------------------------------------------------------------------------------------------------


def test_chatml_render_with_generation_prompt() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = ChatTemplate(CHATML).render(messages)
    assert out == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_render_without_generation_prompt() -> None:
    out = ChatTemplate(CHATML).render(USER_HELLO, add_generation_prompt=False)
    assert out == "<|im_start|>user\nHello<|im_end|>\n"


def test_special_tokens_are_rendered_and_unset_ones_are_undefined() -> None:
    template = ChatTemplate(STRICT_ROLES, bos_token="<s>", eos_token="</s>")
    assert template.render(USER_HELLO) == "<s>[user]Hello</s>"
    probe = ChatTemplate("{{ pad_token is defined }}|{{ unk_token }}|{{ bos_token }}", bos_token="<s>")
    assert probe.render([]) == "False||<s>"


def test_raise_exception_becomes_template_error_with_its_message() -> None:
    template = ChatTemplate(STRICT_ROLES)
    with pytest.raises(TemplateError) as info:
        template.render([{"role": "wizard", "content": "x"}])
    assert info.value.message == "Chat template error: Unknown role: wizard"
    assert str(info.value) == info.value.message
    assert info.value.status == 400


def test_syntax_error_raises_at_construction() -> None:
    with pytest.raises(TemplateError) as info:
        ChatTemplate("{% for message in messages %}{{ message.content }")
    assert info.value.message.startswith("Chat template error: ")
    assert "line 1" in info.value.message


def test_undefined_attribute_becomes_template_error() -> None:
    template = ChatTemplate("{{ messages[0].content.upper() }}")
    with pytest.raises(TemplateError, match=r"^Chat template error: "):
        template.render([{"role": "user"}])


def test_type_error_becomes_template_error() -> None:
    template = ChatTemplate("{{ messages[0].content + 1 }}")
    with pytest.raises(TemplateError, match=r"^Chat template error: TypeError"):
        template.render(USER_HELLO)


def test_strftime_now() -> None:
    template = ChatTemplate("Today is {{ strftime_now('%Y-%m-%d') }}.")
    before = datetime.now().strftime("%Y-%m-%d")
    out = template.render([])
    after = datetime.now().strftime("%Y-%m-%d")
    assert out in (f"Today is {before}.", f"Today is {after}.")


def test_tojson_indent_and_no_html_escaping() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "a < b & 'c' é"}}]
    template = ChatTemplate("{% for tool in tools %}{{ tool | tojson(indent=2) }}{% endfor %}")
    assert template.render([], tools=tools) == json.dumps(tools[0], indent=2, ensure_ascii=False)


def test_tojson_default_separators_and_sort_keys() -> None:
    template = ChatTemplate(
        "{{ messages[0] | tojson }}|{{ messages[0] | tojson(sort_keys=true, separators=(',', ':')) }}"
    )
    message = {"role": "user", "content": "<b>"}
    assert template.render([message]) == '{"role": "user", "content": "<b>"}|{"content":"<b>","role":"user"}'


def test_tools_and_documents_default_to_none() -> None:
    template = ChatTemplate("{{ tools is none }}|{{ documents is none }}")
    assert template.render([]) == "True|True"


def test_documents_are_passed_to_template() -> None:
    template = ChatTemplate("{% for d in documents %}<{{ d.title }}:{{ d.text }}>{% endfor %}")
    out = template.render([], documents=[{"title": "A", "text": "aa"}, {"title": "B", "text": "bb"}])
    assert out == "<A:aa><B:bb>"


def test_tools_must_be_objects() -> None:
    with pytest.raises(TemplateError, match=r"^Chat template error: tools"):
        ChatTemplate(CHATML).render(USER_HELLO, tools=["get_weather"])  # type: ignore[list-item]


def test_custom_kwarg_enable_thinking() -> None:
    template = ChatTemplate(THINKING)
    assert template.render(USER_HELLO) == "user: Hello\nassistant:"
    off = template.render(USER_HELLO, chat_template_kwargs={"enable_thinking": False})
    assert off == "user: Hello\nassistant: <think></think>"


def test_kwargs_may_override_special_tokens() -> None:
    template = ChatTemplate("{{ bos_token }}", bos_token="<s>")
    assert template.render([], chat_template_kwargs={"bos_token": "<BOS>"}) == "<BOS>"


@pytest.mark.parametrize("key", ["messages", "tools", "documents", "add_generation_prompt", "continue_final_message"])
def test_kwargs_cannot_override_request_variables(key: str) -> None:
    with pytest.raises(TemplateError) as info:
        ChatTemplate(CHATML).render(USER_HELLO, chat_template_kwargs={key: []})
    assert info.value.message.startswith("Chat template error: ")
    assert key in info.value.message
    assert info.value.param == "chat_template_kwargs"


def test_content_parts_are_passed_through_unchanged() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": "ok"},
    ]
    assert ChatTemplate(PARTS).render(messages) == "look<img>|ok|"


def test_messages_are_passed_by_reference_not_copied() -> None:
    template = ChatTemplate("{{ messages is sameas same }}|{{ messages[0] is sameas first }}")
    messages = [{"role": "user", "content": "x"}]
    out = template.render(messages, chat_template_kwargs={"same": messages, "first": messages[0]})
    assert out == "True|True"


def test_sandbox_blocks_mutation() -> None:
    template = ChatTemplate("{% set _ = messages.append({'role': 'x'}) %}")
    with pytest.raises(TemplateError, match=r"^Chat template error: "):
        template.render(USER_HELLO)


def test_loopcontrols_and_generation_tag() -> None:
    source = (
        "{% for message in messages %}{% if message.role == 'system' %}{% continue %}{% endif %}"
        "{% if message.role == 'assistant' %}{% generation %}{{ message.content }}{% endgeneration %}"
        "{% else %}{{ message.content }}{% endif %}{% if loop.index >= 3 %}{% break %}{% endif %}{% endfor %}"
    )
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "V"},
    ]
    assert ChatTemplate(source).render(messages) == "UA"


# --- continue_final_message ------------------------------------------------------------------------------------


def test_continue_final_message_cuts_after_final_content() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]
    out = ChatTemplate(CHATML).render(messages, add_generation_prompt=False, continue_final_message=True)
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nThe answer is"


def test_continue_final_message_uses_last_occurrence() -> None:
    messages = [{"role": "user", "content": "yes"}, {"role": "assistant", "content": "yes"}]
    out = ChatTemplate(CHATML).render(messages, add_generation_prompt=False, continue_final_message=True)
    assert out == "<|im_start|>user\nyes<|im_end|>\n<|im_start|>assistant\nyes"


def test_continue_final_message_with_trimmed_trailing_space() -> None:
    source = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>{% endfor %}"
    messages = [{"role": "assistant", "content": "Sure, "}]
    out = ChatTemplate(source).render(messages, add_generation_prompt=False, continue_final_message=True)
    assert out == "<assistant>Sure,"


def test_continue_final_message_with_content_parts() -> None:
    messages = [{"role": "assistant", "content": [{"type": "text", "text": "Once upon"}]}]
    out = ChatTemplate(PARTS).render(messages, add_generation_prompt=False, continue_final_message=True)
    assert out == "Once upon"


def test_continue_final_message_missing_from_output() -> None:
    template = ChatTemplate("{% for m in messages %}{{ m.role }}{% endfor %}")
    with pytest.raises(TemplateError, match=r"^Chat template error: continue_final_message"):
        template.render(
            [{"role": "assistant", "content": "zzz"}], add_generation_prompt=False, continue_final_message=True
        )


def test_continue_final_message_without_messages() -> None:
    with pytest.raises(TemplateError, match=r"^Chat template error: "):
        ChatTemplate(CHATML).render([], add_generation_prompt=False, continue_final_message=True)


def test_continue_final_message_and_generation_prompt_are_mutually_exclusive() -> None:
    with pytest.raises(TemplateError, match="mutually exclusive") as info:
        ChatTemplate(CHATML).render(USER_HELLO, continue_final_message=True)
    assert info.value.message.startswith("Chat template error: ")


# --- loading from a model directory ----------------------------------------------------------------------------


def test_from_model_dir_string_template(tmp_path: Path) -> None:
    write_model_dir(tmp_path, {"chat_template": STRICT_ROLES, "bos_token": "<s>", "eos_token": "</s>"})
    template = ChatTemplate.from_model_dir(str(tmp_path))
    assert template is not None
    assert template.render(USER_HELLO) == "<s>[user]Hello</s>"


def test_from_model_dir_tokens_as_added_token_dicts(tmp_path: Path) -> None:
    config = {
        "chat_template": "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ unk_token }}",
        "bos_token": {"__type": "AddedToken", "content": "<|begin|>", "lstrip": False, "special": True},
        "eos_token": {"content": "<|end|>"},
        "pad_token": None,
        "unk_token": "<unk>",
    }
    template = ChatTemplate.from_model_dir(str(write_model_dir(tmp_path, config)))
    assert template is not None
    assert template.special_tokens == {"bos_token": "<|begin|>", "eos_token": "<|end|>", "unk_token": "<unk>"}
    assert template.render([]) == "<|begin|>|<|end|>||<unk>"


def test_from_model_dir_special_tokens_map_fallback(tmp_path: Path) -> None:
    write_model_dir(tmp_path, {"chat_template": "{{ eos_token }}"},
                    special_tokens_map__json=json.dumps({"eos_token": {"content": "</s>"}}))
    template = ChatTemplate.from_model_dir(str(tmp_path))
    assert template is not None and template.render([]) == "</s>"


def test_from_model_dir_named_templates(tmp_path: Path) -> None:
    config = {
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "DEFAULT"},
            {"name": "rag", "template": "RAG"},
        ]
    }
    write_model_dir(tmp_path, config)
    default = ChatTemplate.from_model_dir(str(tmp_path))
    rag = ChatTemplate.from_model_dir(str(tmp_path), name="rag")
    assert default is not None and default.render([]) == "DEFAULT"
    assert rag is not None and rag.render([]) == "RAG"
    with pytest.raises(ConfigError, match="nope"):
        ChatTemplate.from_model_dir(str(tmp_path), name="nope")


def test_from_model_dir_named_templates_without_default_picks_first(tmp_path: Path) -> None:
    config = {"chat_template": [{"name": "b", "template": "B"}, {"name": "a", "template": "A"}]}
    template = ChatTemplate.from_model_dir(str(write_model_dir(tmp_path, config)))
    assert template is not None and template.render([]) == "B"


def test_from_model_dir_jinja_file_takes_priority(tmp_path: Path) -> None:
    write_model_dir(
        tmp_path,
        {"chat_template": "FROM CONFIG", "eos_token": "</s>"},
        chat_template__jinja="FROM JINJA{{ eos_token }}",
        chat_template__json=json.dumps({"chat_template": "FROM JSON"}),
    )
    template = ChatTemplate.from_model_dir(str(tmp_path))
    assert template is not None and template.render([]) == "FROM JINJA</s>"


def test_from_model_dir_jinja_file_without_config(tmp_path: Path) -> None:
    write_model_dir(tmp_path, None, chat_template__jinja=CHATML)
    template = ChatTemplate.from_model_dir(str(tmp_path))
    assert template is not None
    assert template.render(USER_HELLO).endswith("<|im_start|>assistant\n")
    assert template.special_tokens == {}


def test_from_model_dir_chat_template_json(tmp_path: Path) -> None:
    write_model_dir(
        tmp_path,
        {"chat_template": "FROM CONFIG"},
        chat_template__json=json.dumps({"chat_template": "FROM JSON"}),
    )
    template = ChatTemplate.from_model_dir(str(tmp_path))
    assert template is not None and template.render([]) == "FROM JSON"


def test_from_model_dir_without_template_returns_none(tmp_path: Path) -> None:
    write_model_dir(tmp_path, {"bos_token": "<s>", "model_max_length": 2048})
    assert ChatTemplate.from_model_dir(str(tmp_path)) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ChatTemplate.from_model_dir(str(empty)) is None


def test_from_model_dir_bad_inputs_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ChatTemplate.from_model_dir(str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError):
        ChatTemplate.from_model_dir(str(bad))


def test_from_model_dir_syntax_error_raises_template_error(tmp_path: Path) -> None:
    write_model_dir(tmp_path, {"chat_template": "{% if %}"})
    with pytest.raises(TemplateError, match=r"^Chat template error: "):
        ChatTemplate.from_model_dir(str(tmp_path))


# --- the repository's tiny model -------------------------------------------------------------------------------


def test_tiny_model_template_renders_tools_and_tool_call() -> None:
    if not (TINY_MODEL_DIR / "tokenizer_config.json").is_file():
        pytest.skip(f"{TINY_MODEL_DIR}/tokenizer_config.json does not exist")
    template = ChatTemplate.from_model_dir(str(TINY_MODEL_DIR))
    if template is None:
        pytest.skip("the tiny model has no chat template")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny, 21C"},
    ]
    out = template.render(messages, tools=tools)
    assert "Weather in Paris?" in out
    assert "get_weather" in out
    assert "Paris" in out.split("Weather in Paris?", 1)[1]  # the tool call's arguments are rendered
    assert "sunny, 21C" in out
    without_prompt = template.render(messages, tools=tools, add_generation_prompt=False)
    assert out.startswith(without_prompt) and len(out) > len(without_prompt)
