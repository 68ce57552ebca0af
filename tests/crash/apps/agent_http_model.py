"""The model of the HTTP agent crash test, as a responder for the fake model servers.

    python -m tests.agent.servers openai --log LOG \
        --respond tests.crash.apps.agent_http_model:respond

Turn i (the request's conversation holds i assistant messages) calls `lookup(n=i)` when i is
even and `charge(n=i)` when odd, for i < TURNS; then the final answer. Turn 3 is first
answered 429 (retry-after 0.05 s) and turn 11 first 529. Every answer names the request that
produced it (`r<seq>` in tool-call ids, `receipt` in the final answer, `receipt <seq>` in
error messages), so a journaled answer can be matched with the server's request log.
"""

from __future__ import annotations

import collections
import random
import threading

from tests.agent.servers.base import Fault, Recorded, Reply
from tether.agent.types import ToolCall

TURNS = 20
FAULTS = {3: "rate_limited", 11: "overloaded"}

_seen: collections.Counter[int] = collections.Counter()
_lock = threading.Lock()


def turn_of(recorded: Recorded) -> int:
    """The request's turn: how many assistant messages its conversation holds."""
    return sum(1 for m in recorded.body.get("messages") or [] if m.get("role") == "assistant")


def respond(recorded: Recorded) -> Reply | Fault:
    """The answer to one request of the crash test's agent run."""
    turn = turn_of(recorded)
    with _lock:
        _seen[turn] += 1
        first = _seen[turn] == 1
    delay = random.uniform(0.05, 0.12)
    if first and turn in FAULTS:
        retry_after = "0.05" if FAULTS[turn] == "rate_limited" else None
        return Fault(
            FAULTS[turn],
            retry_after=retry_after,
            message=f"receipt {recorded.seq}: try again",
            delay=delay,
        )
    if turn >= TURNS:
        return Reply(output={"turns": TURNS, "receipt": recorded.seq}, delay=delay)
    name = "lookup" if turn % 2 == 0 else "charge"
    call = ToolCall(id=f"call_{turn}_r{recorded.seq}", name=name, arguments={"n": turn})
    return Reply(tool_calls=[call], delay=delay)
