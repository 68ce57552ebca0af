"""Run a fake model server in a process of its own.

    python -m tests.agent.servers openai|anthropic [--log FILE] [--respond MODULE:NAME]

Prints `URL <base_url>` once it listens, then serves until it is killed (SIGTERM or SIGINT
stop it cleanly). `--log` appends every request received to FILE (see `FakeServer`);
`--respond` answers with the responder `NAME` of `MODULE` (a function of the `Recorded`
request that returns a `Reply` or a `Fault`) instead of the default reply.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import threading

from tests.agent.servers import AnthropicServer, OpenAIServer
from tests.agent.servers.base import FakeServer


def main() -> None:
    kinds: dict[str, type[FakeServer]] = {"openai": OpenAIServer, "anthropic": AnthropicServer}
    parser = argparse.ArgumentParser(prog="python -m tests.agent.servers")
    parser.add_argument("kind", choices=sorted(kinds))
    parser.add_argument("--log", help="append every request received to this file")
    parser.add_argument("--respond", help="MODULE:NAME of a responder function")
    args = parser.parse_args()
    server = kinds[args.kind](log=args.log)
    if args.respond:
        module, _, name = args.respond.partition(":")
        server.respond(getattr(importlib.import_module(module), name))
    server.start()
    print(f"URL {server.base_url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
