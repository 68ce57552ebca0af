"""Fake model servers that speak the OpenAI and Anthropic wire formats, for tests and benches.

```python
server = OpenAIServer().start()           # or the `openai_server` fixture
server.script(Reply(text="hi"), Reply(tool_calls=[ToolCall(id="c1", name="f")]))
server.fail("rate_limited", retry_after=2)
provider = OpenAIProvider(base_url=server.base_url, api_key="test")
...
assert len(server.requests) == 3
server.stop()
```

`OpenAIServer(log=path)` appends every request received to a file (`read_log(path)` reads
it back); `server.respond(fn)` answers from the request itself (`fn(recorded)` returns a
`Reply` or a `Fault`); `server.limit(requests=, tokens=, window=)` answers 429 beyond a quota.
"""

from tests.agent.servers.anthropic_server import AnthropicServer
from tests.agent.servers.base import FAULTS, FakeServer, Fault, Recorded, Reply
from tests.agent.servers.openai_server import OpenAIServer

__all__ = [
    "FAULTS",
    "AnthropicServer",
    "FakeServer",
    "Fault",
    "OpenAIServer",
    "Recorded",
    "Reply",
]
