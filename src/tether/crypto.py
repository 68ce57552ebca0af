"""Payload encryption at rest: AES-256-GCM with the payload's row identity as associated data.

    python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"
    export TETHER_ENCRYPTION_KEY=<that key>

Every stored payload (inputs, step results and errors, outputs, messages, events) is sealed
with a fresh random 96-bit nonce under a 256-bit key. The payload's place (its run, journal
position, field, event key, message identity) is bound as associated data: a ciphertext
copied into another row does not decrypt there, it raises `CorruptRowError`.

Keys rotate: several keys may be configured (comma-separated, newest first). The first one
encrypts; every one of them decrypts, found by the 4-byte key id stored in each ciphertext.
The key id is derived from the key (a hash), so it says nothing about the key itself.

A ciphertext is a version byte (1) + key id (4 bytes) + nonce (12 bytes) + AES-GCM(data) + tag.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tether.codec import Codec, PayloadCodec
from tether.errors import ConfigError, CorruptRowError

if TYPE_CHECKING:
    from tether.settings import Settings

_VERSION = 1
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_KEY_BYTES = 32
_PREFIX = 1 + _KEY_ID_BYTES + _NONCE_BYTES
NAME = "aesgcm"


def parse_keys(text: str) -> list[bytes]:
    """Parse `TETHER_ENCRYPTION_KEY`: comma-separated 256-bit keys, base64 or hex, newest first.

    Raises:
        ConfigError: a key that is not 32 bytes of base64 or hex. The message names the key
            by its position, never by its value.
    """
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise ConfigError(
            "encryption_key is empty; set TETHER_ENCRYPTION_KEY to one or more 256-bit keys "
            "(base64 or hex, comma-separated, newest first) or leave it unset"
        )
    return [_parse_key(part, i) for i, part in enumerate(parts, 1)]


def _parse_key(text: str, position: int) -> bytes:
    decoders: tuple[Callable[[str], bytes], ...] = (
        bytes.fromhex,
        lambda t: base64.b64decode(t, validate=True),
        lambda t: base64.b64decode(t, altchars=b"-_", validate=True),
    )
    for decode in decoders:
        try:
            key = decode(text)
        except ValueError:  # binascii.Error is a ValueError
            continue
        if len(key) == _KEY_BYTES:
            return key
    raise ConfigError(
        f"encryption key #{position} is not a 256-bit key; each key must be 32 random bytes "
        "written as base64 (44 characters) or hex (64 characters), for example the output of "
        '`python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"`'
    )


def key_id(key: bytes) -> bytes:
    """The 4-byte identifier stored with each ciphertext to find the key that decrypts it."""
    return hashlib.sha256(b"tether key id\x00" + key).digest()[:_KEY_ID_BYTES]


class AesGcmCodec:
    """Encrypts payloads with AES-256-GCM, bound to their row identity.

    Args:
        keys: 256-bit keys, newest first: the first encrypts, all decrypt (key rotation).

    Raises:
        ConfigError: no key, a key that is not 32 bytes, or two keys with the same id.
    """

    name = NAME

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError("AesGcmCodec needs at least one 256-bit key")
        self._ciphers: dict[bytes, AESGCM] = {}
        for i, key in enumerate(keys, 1):
            if len(key) != _KEY_BYTES:
                raise ConfigError(f"encryption key #{i} is {len(key)} bytes; it must be 32")
            kid = key_id(key)
            if kid in self._ciphers:
                raise ConfigError(f"encryption key #{i} is given twice; list each key once")
            self._ciphers[kid] = AESGCM(key)
        self._current = key_id(keys[0])

    @classmethod
    def from_text(cls, text: str) -> AesGcmCodec:
        """Build from `TETHER_ENCRYPTION_KEY`'s format (see `parse_keys`)."""
        return cls(parse_keys(text))

    def __repr__(self) -> str:
        return f"AesGcmCodec(<{len(self._ciphers)} key(s)>)"

    def encode(self, data: bytes, context: str) -> bytes:
        """Encrypt `data` under the first key, bound to `context`."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(nonce, data, context.encode())
        return bytes([_VERSION]) + self._current + nonce + sealed

    def decode(self, data: bytes, context: str) -> bytes:
        """Decrypt what `encode` produced for the same `context`.

        Raises:
            CorruptRowError: the payload was encrypted for another row, with a key not
                configured here, or was altered. The message shows neither key nor data.
        """
        if len(data) < _PREFIX + 16 or data[0] != _VERSION:
            raise CorruptRowError("an encrypted payload is truncated or not in a known format")
        kid = data[1 : 1 + _KEY_ID_BYTES]
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise CorruptRowError(
                f"a payload was encrypted with a key that is not configured (key id "
                f"{kid.hex()}); add that key to TETHER_ENCRYPTION_KEY (after the current one) "
                "to read it"
            )
        nonce = data[1 + _KEY_ID_BYTES : _PREFIX]
        try:
            return cipher.decrypt(nonce, data[_PREFIX:], context.encode())
        except InvalidTag:
            raise CorruptRowError(
                f"an encrypted payload does not belong at {context}: it was moved or copied "
                "from another row, or altered; it cannot be decrypted here"
            ) from None


def app_codec(settings: Settings, codecs: Sequence[PayloadCodec] = ()) -> Codec:
    """The payload codec of an app (or CLI) with these settings and extra `codecs`.

    `Settings.encryption_key`, when set, adds an `AesGcmCodec` after the given codecs (so
    compression runs before encryption), unless they already hold one.
    """
    chain = list(codecs)
    if settings.encryption_key and not any(c.name == NAME for c in chain):
        chain.append(AesGcmCodec.from_text(settings.encryption_key))
    return Codec(chain, settings.max_payload_bytes)
