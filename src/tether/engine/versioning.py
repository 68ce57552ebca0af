"""Changing workflow code under running workflows: `tether.patched`.

    if tether.patched("use-search-v2"):
        results = await search_v2(query)      # runs started after the change
    else:
        results = await search_v1(query)      # runs that got past this point before it

On first execution `patched` journals a marker at its position and returns True. On replay
it returns True if the marker is there; if the journal holds something else at that position
(the run passed this point before the change existed), it returns False and takes no
position, so the run replays the old path exactly.
"""

from __future__ import annotations

from tether.engine.waiting import Position, execution
from tether.errors import ConfigError

PREFIX = "tether.patch:"


def patched(change: str) -> bool:
    """Whether this run takes the new code path of `change` (see the module docs)."""
    if not change or len(change) > 100:
        raise ConfigError(f"a change name must be 1 to 100 characters, not {change!r}")
    ex = execution("tether.patched()")
    name = PREFIX + change
    recorded = ex.journal.get(ex.peek_seq())
    if recorded is not None and recorded.name != name:
        return False
    pos = Position(ex, name)
    if pos.final(pos.replay()):
        return True
    pos.commit(pos.entry(b"null"))  # a marker, written at once from either kind of workflow
    return True
