"""The audit chain: an append-only log where each record holds the hash of the previous one.

A record's hash is SHA-256 (or HMAC-SHA-256 under a key) over the canonical JSON of its chain,
position, kind, data and the previous record's hash. Changing any record changes its hash and
breaks the link from the next; deleting or inserting a record breaks a link or the seq order;
deleting the last records breaks the link to the chain's head, which the store writes with each
append. Without a key, someone with write access to the database can recompute every hash after
an edit; with a key (`TETHER_AUDIT_KEY`), they cannot without it.

The data is stored through the app's codecs (so it is encrypted at rest when encryption is on);
the hash covers the plaintext, so it does not depend on a codec's random nonce and a replayed
execution appends records identical to those it appended before a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tether.codec import Codec, canonical_json
from tether.errors import AuditChainError
from tether.store.base import GENESIS, AuditHead, AuditRow


def record_hash(
    chain_id: str, seq: int, kind: str, data: Any, prev_hash: str, key: bytes | None = None
) -> str:
    """The hash of one record, linking it to `prev_hash`."""
    payload = canonical_json(
        {"chain": chain_id, "seq": seq, "kind": kind, "data": data, "prev": prev_hash}
    )
    if key is not None:
        return hmac.new(key, payload, hashlib.sha256).hexdigest()
    return hashlib.sha256(payload).hexdigest()


@dataclasses.dataclass(frozen=True)
class Record:
    """One decoded audit record."""

    seq: int
    kind: str
    data: Any
    prev_hash: str
    hash: str
    created_at: float


class Chain:
    """Builds the records of one chain in order, each linked to the one before.

    Args:
        chain_id: the chain (a mission's run id).
        codec: the app's codec; bodies are stored through it.
        key: the HMAC key, if the chain is keyed.
        records: the records already in the chain, to continue from.
    """

    def __init__(
        self, chain_id: str, codec: Codec, key: bytes | None = None, records: Sequence[Record] = ()
    ) -> None:
        self.chain_id = chain_id
        self.codec = codec
        self.key = key
        self.records: list[Record] = list(records)

    @property
    def head(self) -> str:
        """The hash of the last record (the genesis hash for an empty chain)."""
        return self.records[-1].hash if self.records else GENESIS

    def append(self, kind: str, data: Mapping[str, Any], now: float) -> AuditRow:
        """Add a record; return its row for the store."""
        seq = len(self.records)
        raw = self.codec.to_json(dict(data), f"audit record {seq} of {self.chain_id!r}")
        plain = json.loads(raw)
        digest = record_hash(self.chain_id, seq, kind, plain, self.head, self.key)
        self.records.append(Record(seq, kind, plain, self.head, digest, now))
        body = self.codec.seal(raw, f"audit record {seq}", f"audit/{self.chain_id}/{seq}")
        return AuditRow(self.chain_id, seq, kind, body, self.records[-1].prev_hash, digest, now)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The result of verifying a chain: `broken_at` is the first record whose link fails."""

    chain_id: str
    records: int
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether every link holds."""
        return self.broken_at is None


def decode(rows: Sequence[AuditRow], codec: Codec) -> list[Record]:
    """Decode stored rows into records, without verifying them."""
    return [
        Record(
            r.seq,
            r.kind,
            json.loads(codec.open(r.body, f"audit record {r.seq}", f"audit/{r.chain_id}/{r.seq}")),
            r.prev_hash,
            r.hash,
            r.created_at,
        )
        for r in rows
    ]


def verify(
    chain_id: str,
    rows: Sequence[AuditRow],
    head: AuditHead | None,
    codec: Codec,
    key: bytes | None = None,
) -> Verdict:
    """Check every link of a chain and its head; name the first broken one."""
    prev = GENESIS
    for expected, row in enumerate(rows):
        broken = _broken_link(chain_id, expected, row, prev, codec, key)
        if broken is not None:
            return Verdict(chain_id, len(rows), expected, broken)
        prev = row.hash
    last = len(rows) - 1
    if head is None:
        if rows:
            return Verdict(chain_id, len(rows), 0, "the chain has records but no head")
        return Verdict(chain_id, 0)
    if head.seq != last or head.hash != prev:
        where = min(head.seq, last + 1)
        return Verdict(
            chain_id,
            len(rows),
            where,
            f"the head says the chain ends at record {head.seq}, but it ends at {last}: "
            "records were deleted from its end or the head was altered",
        )
    return Verdict(chain_id, len(rows))


def _broken_link(
    chain_id: str, expected: int, row: AuditRow, prev: str, codec: Codec, key: bytes | None
) -> str | None:
    if row.seq != expected:
        return f"record {expected} is missing (the next record is {row.seq}): deleted or reordered"
    if row.prev_hash != prev:
        return (
            f"record {expected} does not link to record {expected - 1}: "
            "a record was inserted, deleted or reordered"
        )
    try:
        data = json.loads(
            codec.open(row.body, f"audit record {row.seq}", f"audit/{chain_id}/{row.seq}")
        )
    except Exception as exc:  # an unreadable body is a broken record, whatever the cause
        return f"record {expected} cannot be read ({type(exc).__name__}): edited"
    if record_hash(chain_id, row.seq, row.kind, data, row.prev_hash, key) != row.hash:
        return f"record {expected} does not match its hash: its kind or data was edited"
    return None


def require_intact(verdict: Verdict) -> None:
    """Raise `AuditChainError` unless `verdict` is ok."""
    if not verdict.ok:
        raise AuditChainError(
            f"audit chain {verdict.chain_id!r} is broken at record {verdict.broken_at}: "
            f"{verdict.reason}; restore the database from a backup or investigate the change",
            chain_id=verdict.chain_id,
            seq=verdict.broken_at or 0,
        )
