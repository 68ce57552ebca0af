"""Payload encryption at rest, on both databases: nothing readable in the raw storage.

Twenty known markers go through every kind of payload (inputs, step results, outputs, errors,
messages, events, children's outcomes); after the runs, neither the SQLite files (database,
-wal, -shm) nor a `pg_dump` of the schema hold any of them, as text or as hex (bytea). A
ciphertext moved to another row by raw SQL does not decrypt there; a wrong key and a missing
key give clear errors; rotated keys read old rows and write with the newest key.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.conftest import MakeApp
from tether.crypto import AesGcmCodec, parse_keys
from tether.settings import Settings

pytestmark = pytest.mark.timeout(120)

MARK = uuid.uuid4().hex[:10]
MARKERS = [f"SECRET{i:02d}x{MARK}" for i in range(20)]


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


KEY = new_key()


def define(app: tether.App) -> None:
    m = MARKERS

    @app.step(name="fetch")
    async def fetch(x: str) -> dict[str, Any]:
        return {"page": m[3], "echo": x}

    @app.step(name="flaky", retry=tether.Retry(attempts=2, initial_delay=0.01, jitter=0))
    async def flaky() -> str:
        raise ValueError(m[4])  # a retry entry, then a final error entry

    @app.step(name="plain")
    def plain() -> list[str]:
        return [m[5]]

    define_workflows(app, fetch, flaky, plain)


def define_workflows(app: tether.App, fetch: Any, flaky: Any, plain: Any) -> None:
    m = MARKERS

    @app.workflow(name="child")
    async def child(secret: str) -> str:
        if secret == "fail":
            raise RuntimeError(m[6])
        return m[7] + secret

    @app.workflow(name="main")
    async def main(a: str, *, b: str) -> dict[str, Any]:
        page = await fetch(a)
        with contextlib.suppress(ValueError):
            await flaky()
        listed = plain()
        await tether.set_event("progress", {"note": m[8]})
        got = await tether.recv("inbox", timeout=30)
        kid = await child(m[9])
        with contextlib.suppress(tether.WorkflowFailedError):
            await child("fail")
        return {"page": page, "listed": listed, "got": got, "kid": kid, "b": b, "out": m[10]}

    @app.workflow(name="doomed")
    async def doomed(note: str) -> None:
        raise KeyError(m[11] + note)

    @app.workflow(name="waiter")
    async def waiter() -> Any:
        return await tether.recv("never", timeout=3600)


def raw_storage(app: tether.App) -> bytes:
    """Every byte tether's data occupies: the SQLite files, or a pg_dump of the schema."""
    url = app.settings.database_url or ""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        parts = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        return b"".join(p.read_bytes() for p in parts if p.exists())
    dumped = subprocess.run(
        ["pg_dump", "--no-owner", "-n", app.settings.pg_schema, url],
        check=True,
        capture_output=True,
    )
    return dumped.stdout


def leaked(raw: bytes) -> list[str]:
    """The markers found in `raw`, as bytes, as UTF-16, or hex-encoded (how bytea dumps)."""
    lowered = raw.lower()
    found = []
    for marker in MARKERS:
        text = marker.encode()
        if text in raw or text.hex().encode() in lowered or marker.encode("utf-16-le") in raw:
            found.append(marker)
    return found


def encrypted(make_app: MakeApp, key: str = KEY, **options: Any) -> tether.App:
    return make_app(encryption_key=key, **options)


async def run_everything(app: tether.App) -> None:
    async with app:
        main = await app.start("main", MARKERS[0], b=MARKERS[1], id="main-1")
        await app.send("main-1", "inbox", {"body": MARKERS[2]})
        await app.send("main-1", "inbox", {"unread": MARKERS[12]}, key="second")
        assert (await main.result(timeout=60))["out"] == MARKERS[10]
        doomed = await app.start("doomed", MARKERS[13], id="doomed-1")
        with pytest.raises(tether.WorkflowFailedError, match=MARKERS[11]):
            await doomed.result(timeout=30)
        waiting = await app.start("waiter", id="waiter-1")
        await app.send("waiter-1", "other", [MARKERS[14]])
        await app.cancel(waiting.id)
        fork = await app.fork("main-1", from_step=3, new_id="main-fork")
        await app.send("main-fork", "inbox", MARKERS[15])
        assert (await fork.result(timeout=60))["got"] == MARKERS[15]
        assert await app.get_event("main-1", "progress") == {"note": MARKERS[8]}
    # Markers 16-19 only as values the engine never sees elsewhere: a late event, an input.
    async with app:
        late = await app.start("doomed", MARKERS[16] + MARKERS[17], id="doomed-2")
        with pytest.raises(tether.WorkflowFailedError):
            await late.result(timeout=30)
        extra = await app.start("main", MARKERS[18], b=MARKERS[19], id="main-2")
        await app.send("main-2", "inbox", "x")
        await extra.result(timeout=60)


async def test_encryption__no_marker_anywhere_in_the_raw_database(make_app: MakeApp):
    app = encrypted(make_app)
    define(app)
    await run_everything(app)
    # Everything decrypts for the app holding the key.
    result = await app.retrieve("main-1").result()
    assert result["page"] == {"page": MARKERS[3], "echo": MARKERS[0]}
    assert result["got"] == {"body": MARKERS[2]}
    assert result["kid"] == MARKERS[7] + MARKERS[9]
    steps = await app.retrieve("main-1").steps()
    assert any(s.error_message == MARKERS[4] for s in steps)
    with pytest.raises(tether.WorkflowCancelledError):
        await app.retrieve("waiter-1").result()
    app.close()
    assert leaked(raw_storage(app)) == []


async def test_encryption__control__without_key_markers_are_visible(make_app: MakeApp):
    # The same runs unencrypted: proves the scan above would see the markers if they leaked.
    app = make_app()
    define(app)
    await run_everything(app)
    app.close()
    assert len(leaked(raw_storage(app))) >= 18


async def test_encryption__cli_show_decrypts_with_the_configured_key(make_app: MakeApp):
    app = encrypted(make_app)
    define(app)
    async with app:
        await app.start("doomed", "cli", id="d")
        with pytest.raises(tether.WorkflowFailedError):
            await app.retrieve("d").result(timeout=30)
    env_key = {"TETHER_ENCRYPTION_KEY": KEY}
    shown = invoke_env(app, env_key, "workflows", "show", "d", "--json")
    assert shown.exit_code == 0, shown.output
    assert MARKERS[11] + "cli" in shown.output
    assert '"cli"' in shown.output
    blind = invoke_env(app, {}, "workflows", "show", "d", "--json")
    assert blind.exit_code == 0
    assert MARKERS[11] not in blind.output
    assert "aesgcm" in blind.output  # says which codec the payload needs


def invoke_env(app: tether.App, env: dict[str, str], *args: str) -> Any:
    from typer.testing import CliRunner

    from tether.cli.main import app as cli

    full = {
        "TETHER_DATABASE_URL": app.settings.database_url or "",
        "TETHER_PG_SCHEMA": app.settings.pg_schema,
        "TETHER_ENCRYPTION_KEY": "",
        **env,
    }
    return CliRunner().invoke(cli, list(args), env=full)


def raw_sql(app: tether.App, statement: str, params: tuple[Any, ...]) -> None:
    store: Any = app.store
    if app.store.dialect == "sqlite":
        conn = store._connect()
        with conn:
            conn.execute(statement.replace("%s", "?"), params)
        conn.close()
        return
    import psycopg

    with psycopg.connect(app.settings.database_url or "", autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{app.settings.pg_schema}"')
        conn.execute(statement, params)


async def test_encryption__ciphertext_moved_to_another_row__corrupt_row_error(
    make_app: MakeApp,
):
    app = encrypted(make_app)

    @app.step(name="s")
    async def s(x: int) -> int:
        return x * 10

    @app.workflow(name="w")
    async def w(x: int) -> int:
        return await s(x) + await s(x + 1)

    async with app:
        assert await (await app.start(w, 1, id="a")).result(timeout=30) == 30
        assert await (await app.start(w, 2, id="b")).result(timeout=30) == 50
    # Run a's output into run b's row: same column, another row.
    raw_sql(
        app, "UPDATE runs SET output = (SELECT output FROM runs WHERE id = 'a') WHERE id = 'b'", ()
    )
    with pytest.raises(tether.CorruptRowError, match="moved or copied") as info:
        await app.retrieve("b").result()
    assert "runs" in str(info.value)
    assert "30" not in str(info.value).split("[")[0]
    # Step 0's output into step 1 of the same run: same run, another position.
    raw_sql(
        app,
        "UPDATE steps SET output = (SELECT output FROM steps WHERE run_id = 'a' AND "
        "seq = 0) WHERE run_id = 'a' AND seq = 1",
        (),
    )
    with pytest.raises(tether.CorruptRowError, match="moved or copied"):
        await app.retrieve("a").steps()
    # An input moved: the run fails with the error recorded, it is not left running.
    raw_sql(
        app,
        "UPDATE runs SET input = (SELECT input FROM runs WHERE id = 'a'), "
        "status = 'PENDING', owner = NULL, output = NULL WHERE id = 'b'",
        (),
    )
    raw_sql(app, "DELETE FROM steps WHERE run_id = 'b'", ())
    async with app:
        with pytest.raises(tether.WorkflowFailedError) as failed:
            await app.retrieve("b").result(timeout=30)
    assert isinstance(failed.value.cause, tether.CorruptRowError)


async def test_encryption__wrong_or_missing_key__clear_errors(make_app: MakeApp):
    app = encrypted(make_app)

    @app.workflow(name="w")
    async def w() -> str:
        return MARKERS[0]

    async with app:
        await (await app.start(w, id="r")).result(timeout=30)
    other = encrypted(make_app, key=new_key())
    with pytest.raises(tether.CorruptRowError, match="key that is not configured") as info:
        await other.retrieve("r").result()
    assert KEY not in str(info.value)
    none = make_app()
    with pytest.raises(tether.ConfigError, match="codec 'aesgcm'"):
        await none.retrieve("r").result()
    # A fork by an app without the key fails whole, instead of copying unreadable payloads.
    with pytest.raises(tether.ConfigError, match="codec 'aesgcm'"):
        await none.fork("r", from_step=0, new_id="copy")
    assert none.store.get_run("copy") is None
    forked = await app.fork("r", from_step=0, new_id="copy")
    async with app:
        assert await forked.result(timeout=30) == MARKERS[0]


async def test_encryption__rotation__newest_key_writes_every_key_reads(make_app: MakeApp):
    old, new = KEY, new_key()

    def define_w(app: tether.App) -> None:
        @app.workflow(name="w")
        async def w(x: str) -> str:
            return x.upper()

    first = encrypted(make_app, key=old)
    define_w(first)
    async with first:
        await (await first.start("w", "old", id="before")).result(timeout=30)
    rotated = encrypted(make_app, key=f"{new},{old}")
    define_w(rotated)
    async with rotated:
        await (await rotated.start("w", "new", id="after")).result(timeout=30)
    assert await rotated.retrieve("before").result() == "OLD"
    assert await rotated.retrieve("after").result() == "NEW"
    only_new = encrypted(make_app, key=new)
    assert await only_new.retrieve("after").result() == "NEW"
    with pytest.raises(tether.CorruptRowError, match="not configured"):
        await only_new.retrieve("before").result()
    only_old = encrypted(make_app, key=old)
    with pytest.raises(tether.CorruptRowError, match="not configured"):
        await only_old.retrieve("after").result()


def test_keys__formats_errors_and_repr_never_show_the_key():
    raw = os.urandom(32)
    assert parse_keys(raw.hex()) == [raw]
    assert parse_keys(base64.b64encode(raw).decode()) == [raw]
    assert parse_keys(base64.urlsafe_b64encode(raw).decode()) == [raw]
    two = os.urandom(32)
    assert parse_keys(f"{raw.hex()}, {base64.b64encode(two).decode()}") == [raw, two]
    short = base64.b64encode(os.urandom(16)).decode()
    with pytest.raises(tether.ConfigError, match="key #2 is not a 256-bit key") as info:
        Settings(encryption_key=f"{KEY},{short}")
    assert short not in str(info.value)
    assert KEY not in str(info.value)
    with pytest.raises(tether.ConfigError, match="given twice"):
        AesGcmCodec([raw, raw])
    settings = Settings.from_env({"TETHER_ENCRYPTION_KEY": KEY})
    assert settings.encryption_key == KEY
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    assert KEY not in repr(dataclasses.replace(settings))
    assert raw.hex() not in repr(AesGcmCodec([raw]))


def test_codec__same_value_twice__different_ciphertexts_and_context_bound():
    codec = AesGcmCodec([os.urandom(32)])
    a, b = codec.encode(b"same", "ctx"), codec.encode(b"same", "ctx")
    assert a != b
    assert codec.decode(a, "ctx") == codec.decode(b, "ctx") == b"same"
    with pytest.raises(tether.CorruptRowError, match="moved or copied"):
        codec.decode(a, "other")
    tampered = a[:-1] + bytes([a[-1] ^ 1])
    with pytest.raises(tether.CorruptRowError):
        codec.decode(tampered, "ctx")
    with pytest.raises(tether.CorruptRowError, match="truncated"):
        codec.decode(a[:10], "ctx")
