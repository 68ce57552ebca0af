"""Model providers: OpenAI (and any OpenAI-compatible server) and Anthropic, through their SDKs."""
