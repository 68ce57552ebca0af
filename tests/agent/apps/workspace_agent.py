"""A tether app for the workspace crash test: an agent editing files between checkpoints.

    WS_ROOT=/dir WS_HANG=1 python workspace_agent.py     (database from TETHER_DATABASE_URL)

Runs `agent-1` (idempotent id) in `WS_ROOT/agent-1` and prints its result as JSON. With
WS_HANG=1 the step after the third checkpoint never returns, for the test to kill the process.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import tether
from tether.agent import Workspace

ROOT = Path(os.environ["WS_ROOT"])
HANG = os.environ.get("WS_HANG") == "1"

app = tether.App()


@app.step(name="write")
def write(root: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if text.startswith("bytes:"):
            path.write_bytes(bytes(i % 251 for i in range(int(text[6:]))))
        else:
            path.write_text(text)


@app.step(name="hang")
async def hang() -> None:
    if HANG:
        await asyncio.sleep(3600)


@app.step(name="look")
def look(root: str) -> dict[str, str]:
    out = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            out[rel + "/"] = oct(path.stat().st_mode & 0o777)
        else:
            data = path.read_bytes()
            out[rel] = data.decode() if len(data) < 1000 else f"<{len(data)} bytes>"
    return out


@app.workflow(name="agent")
async def agent() -> dict[str, Any]:
    ws = Workspace(ROOT / tether.context().workflow_id)
    root = str(ws.path)
    snaps = []
    write(root, {"notes.md": "v1", "src/main.py": "print(1)", "data.bin": "bytes:3000000"})
    snaps.append(await ws.checkpoint())
    write(root, {"src/main.py": "print(2)"})
    snaps.append(await ws.checkpoint())
    write(root, {"notes.md": "v3"})
    snaps.append(await ws.checkpoint())
    write(root, {"lost.txt": "after the last checkpoint"})
    await hang()
    seen = look(root)
    snaps.append(await ws.checkpoint())
    return {"seen": seen, "snapshots": snaps}


async def main() -> None:
    async with app:
        handle = await app.start(agent, id="agent-1")
        result = await handle.result(timeout=60)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
