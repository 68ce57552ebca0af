"""Words for lexical comparison: lowercase terms without stop words, lightly stemmed."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_WORD = re.compile(r"[a-z][a-z0-9]+|[0-9]+(?:\.[0-9]+)?")
_SPLIT_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "let",
        "me",
        "my",
        "no",
        "not",
        "now",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "too",
        "up",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "all",
        "any",
        "each",
        "few",
        "more",
        "most",
        "other",
        "own",
        "same",
        "just",
        "only",
        "very",
        "also",
        "get",
        "got",
        "make",
        "made",
        "use",
        "used",
        "using",
        "need",
        "needs",
        "want",
        "please",
        "okay",
        "ok",
        "yes",
        "here",
        "next",
        "first",
        "done",
        "will",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "new",
        "file",
        "files",
        "path",
        "dir",
        "directory",
        "name",
        "text",
        "content",
        "value",
        "data",
        "result",
        "results",
        "tool",
        "call",
        "args",
        "arg",
        "true",
        "false",
        "none",
        "null",
        "json",
    ]
)


def terms(text: str) -> set[str]:
    """The comparable terms of `text`."""
    text = _SPLIT_CAMEL.sub(" ", text).replace("_", " ").lower()
    return {_stem(w) for w in _WORD.findall(text) if w not in STOP and len(w) > 2}


def value_terms(value: Any) -> set[str]:
    """The terms of every string and number inside a JSON value."""
    if isinstance(value, dict):
        return set().union(*(value_terms(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(value_terms(v) for v in value)) if value else set()
    if value is None or isinstance(value, bool):
        return set()
    return terms(str(value))


def union(texts: Iterable[str]) -> set[str]:
    """The terms of several texts together."""
    found: set[str] = set()
    for text in texts:
        found |= terms(text)
    return found


def _stem(word: str) -> str:
    for suffix in ("ings", "ing", "ies", "ied", "es", "ed", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
    return word
