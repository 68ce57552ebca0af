"""Model providers: each turns a `ModelRequest` into a `ModelResponse` or a classified error.

`scripted.ScriptedProvider` plays a deterministic script (demos and tests, no keys).
"""

from tether.agent.providers.scripted import ScriptedProvider

__all__ = ["ScriptedProvider"]
