"""Trajectory builders for the mission tests: OpenAI-style chat messages."""

from __future__ import annotations

import itertools
import json
from typing import Any

_ids = itertools.count()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(name: str, /, say: str | None = None, **args: Any) -> dict[str, Any]:
    cid = f"call_{next(_ids)}"
    return {
        "role": "assistant",
        "content": say,
        "tool_calls": [
            {
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
        ],
    }


def result(message: dict[str, Any], content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": content}


def answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def exchange(name: str, observed: str, /, **args: Any) -> list[dict[str, Any]]:
    c = call(name, **args)
    return [c, result(c, observed)]
