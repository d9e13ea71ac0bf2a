"""Client libraries against the shared daemon, one short flow each: langchain-openai (chat completions and the
Responses API: invoke, stream, bind_tools, with_structured_output), langchain-anthropic (/v1/messages) and
pydantic-ai (a typed output through an output tool). The mock worker answers a forced tool call or a JSON schema
with conforming JSON, so the typed results validate."""

from __future__ import annotations

import asyncio

import pydantic
import pytest
from e2e_support import MODEL
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic_ai import Agent, AgentRunResult
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

PROMPT = "Describe a city."


class City(pydantic.BaseModel):
    """A city."""

    name: str
    population: int
    coastal: bool


@tool
def get_weather(city: str) -> str:
    """Current weather of a city."""
    return "sunny"


def chat_openai(daemon, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=daemon.base_url + "/v1", api_key="e2e", max_retries=0, timeout=60,
                      **kwargs)


def test_langchain_openai_invoke_and_stream(daemon):
    llm = chat_openai(daemon, max_tokens=20, seed=3, stream_usage=True)  # seeded: the stream repeats the answer
    unary = llm.invoke(PROMPT)
    assert unary.content and unary.response_metadata["finish_reason"] in ("stop", "length")
    assert unary.usage_metadata["input_tokens"] > 0 and unary.usage_metadata["output_tokens"] > 0
    streamed = AIMessageChunk(content="")
    for chunk in llm.stream(PROMPT):
        streamed += chunk
    assert streamed.content == unary.content
    assert streamed.usage_metadata == unary.usage_metadata


@pytest.mark.parametrize("responses_api", [False, True])
def test_langchain_openai_tools_and_structured_output(daemon, responses_api):
    llm = chat_openai(daemon, max_tokens=300, use_responses_api=responses_api)
    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert [call["name"] for call in called.tool_calls] == ["get_weather"]
    assert isinstance(called.tool_calls[0]["args"]["city"], str)
    for method in ("json_schema", "function_calling"):
        city = llm.with_structured_output(City, method=method).invoke(PROMPT)
        assert isinstance(city, City), method


def test_langchain_anthropic_invoke_and_stream(daemon):
    llm = ChatAnthropic(model=MODEL, base_url=daemon.base_url, api_key="e2e", max_retries=0, max_tokens=20)
    unary = llm.invoke(PROMPT)
    assert unary.content and unary.response_metadata["stop_reason"] in ("end_turn", "max_tokens")
    assert unary.usage_metadata["input_tokens"] > 0
    text = "".join(chunk.text for chunk in llm.stream(PROMPT))
    assert text
    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert [call["name"] for call in called.tool_calls] == ["get_weather"]


def test_pydantic_ai_typed_output(daemon):
    async def run() -> AgentRunResult[City]:
        async with daemon.async_client() as client:  # closed in its event loop
            model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
            return await Agent(model, output_type=City).run(PROMPT, model_settings={"max_tokens": 300, "seed": 4})

    result = asyncio.run(run())
    assert isinstance(result.output, City)
    assert result.usage.input_tokens > 0
