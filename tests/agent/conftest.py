"""Fake OpenAI and Anthropic servers as fixtures: one per session, reset for every test.

`openai_server` / `anthropic_server` expose `.url`, `.base_url` (what the SDK takes),
`.script(Reply(...), ...)`, `.fail(kind, times=..., retry_after=...)`, `.recover()` and
`.requests` (what the server received). The servers run in a thread of the test process, so
child processes (crash tests) reach them by URL too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.servers import AnthropicServer, OpenAIServer


@pytest.fixture(scope="session")
def _openai_server_session() -> Iterator[OpenAIServer]:
    server = OpenAIServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _anthropic_server_session() -> Iterator[AnthropicServer]:
    server = AnthropicServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def openai_server(_openai_server_session: OpenAIServer) -> Iterator[OpenAIServer]:
    """A fake OpenAI chat-completions server with an empty script and request log."""
    _openai_server_session.reset()
    yield _openai_server_session
    _openai_server_session.reset()


@pytest.fixture
def anthropic_server(_anthropic_server_session: AnthropicServer) -> Iterator[AnthropicServer]:
    """A fake Anthropic messages server with an empty script and request log."""
    _anthropic_server_session.reset()
    yield _anthropic_server_session
    _anthropic_server_session.reset()
