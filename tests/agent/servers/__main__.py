"""Run a fake model server in a process of its own.

    python -m tests.agent.servers openai|anthropic

Prints `URL <base_url>` once it listens, then serves its default reply until it is killed.
"""

from __future__ import annotations

import signal
import sys
import threading

from tests.agent.servers import AnthropicServer, OpenAIServer


def main() -> None:
    kinds = {"openai": OpenAIServer, "anthropic": AnthropicServer}
    if len(sys.argv) != 2 or sys.argv[1] not in kinds:
        sys.exit(f"usage: python -m tests.agent.servers {'|'.join(kinds)}")
    server = kinds[sys.argv[1]]().start()
    print(f"URL {server.base_url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
