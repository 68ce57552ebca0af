"""A mission's durable state: its audit chain, read back and written with idempotent tags.

The audit chain is not only evidence: it is the mission's memory. Its state (the last
transition), how often each kind of signal was corrected, the last verification and every
decision are read back from it, so a worker that resumes a mission after a crash steers
exactly as the one that crashed would have.

Every batch of records is written under a tag: the journal position of the step that wrote
it. A step re-executed after a crash (or by a worker that took the run over) finds its tag
in the chain and reuses what was decided the first time instead of deciding again, so the
chain holds no duplicate and the verdicts do not change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tether.codec import Codec
from tether.mission import audit
from tether.mission.states import MissionState
from tether.store.base import Store

Item = tuple[str, Mapping[str, Any]]
"""A record to append: its kind and its data."""


@dataclasses.dataclass
class Ledger:
    """The decoded records of one mission's chain, with what they say."""

    chain_id: str
    records: list[audit.Record]

    def tagged(self, tag: str) -> list[audit.Record]:
        """The records written under `tag`."""
        return [r for r in self.records if r.data.get("tag") == tag]

    def of_kind(self, kind: str) -> list[audit.Record]:
        """The records of one kind, in order."""
        return [r for r in self.records if r.kind == kind]

    @property
    def state(self) -> MissionState:
        """The state the last transition moved to."""
        moves = self.of_kind("transition")
        return MissionState(moves[-1].data["to"]) if moves else MissionState.CREATED

    def corrections(self, kind: str) -> int:
        """How often signals of `kind` were acted upon (notes not counted)."""
        return sum(
            1
            for r in self.of_kind("correction")
            if r.data.get("signal") == kind and r.data.get("action") != "note"
        )

    @property
    def rollbacks(self) -> int:
        """How many rollbacks the mission took."""
        return sum(1 for r in self.of_kind("correction") if r.data.get("action") == "rollback")

    def last_decision(self, segment: int) -> audit.Record | None:
        """The latest decision taken while the agent ran its `segment`-th time."""
        found = [r for r in self.of_kind("decision") if r.data.get("segment") == segment]
        return found[-1] if found else None


class LedgerStore:
    """Reads and appends one app's mission chains (store calls run off the event loop)."""

    def __init__(self, store: Store, codec: Codec, key: bytes | None) -> None:
        self.store = store
        self.codec = codec
        self.key = key

    async def load(self, chain_id: str) -> Ledger:
        """Read the chain back."""
        rows, _ = await asyncio.to_thread(self.store.load_audit, chain_id)
        return Ledger(chain_id, audit.decode(rows, self.codec))

    async def write(self, chain_id: str, tag: str, items: Sequence[Item]) -> list[audit.Record]:
        """Append `items` under `tag`, unless records under `tag` exist: return those instead."""
        ledger = await self.load(chain_id)
        done = ledger.tagged(tag)
        if done or not items:
            return done
        chain = audit.Chain(chain_id, self.codec, self.key, ledger.records)
        now = time.time()
        rows = [chain.append(kind, {**data, "tag": tag}, now) for kind, data in items]
        await asyncio.to_thread(self.store.append_audit, rows, now)
        return chain.records[len(ledger.records) :]


def transition(source: MissionState, target: MissionState, **evidence: Any) -> Item:
    """A transition record."""
    return "transition", {"from": source.value, "to": target.value, "evidence": evidence}
