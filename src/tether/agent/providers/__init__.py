"""Model providers: each turns a `ModelRequest` into a `ModelResponse` or a classified error.

- `scripted.ScriptedProvider` plays a deterministic script (demos and tests, no keys).
- `openai.OpenAIProvider`: OpenAI and any OpenAI-compatible server (vLLM, llama.cpp, Ollama),
  through the official SDK (`pip install 'tether[openai]'`).
- `anthropic.AnthropicProvider`: Anthropic, through the official SDK
  (`pip install 'tether[anthropic]'`).

The SDK-backed providers are imported from their modules, so the SDKs stay optional.
"""

from tether.agent.providers.scripted import ScriptedProvider

__all__ = ["ScriptedProvider"]
