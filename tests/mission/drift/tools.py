"""The tools the drift scenarios' agents use, working on a real folder (the workspace).

Every tool is deterministic: the same call on the same workspace returns the same text, so a
scenario's observations are fixed by its data.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import tether


class ToolFailure(Exception):
    """A tool refusing a call; the agent turns it into an `error: ...` observation."""


def _inside(root: Path, path: str) -> Path:
    target = (root / path).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ToolFailure(f"{path} is outside the workspace")
    return target


ONCE = tether.Retry(attempts=1)
"""Tools fail once and the agent reads the error: a scenario's failures are its data."""


def toolbox(app: tether.App, root: Path, names: list[str], ran: list[str]) -> list[Any]:
    """The tools called `names`, registered on `app`, working in `root`.

    Each tool appends its name to `ran` when its body runs (a blocked call never does).
    """
    every = {
        **_file_tools(app, root, ran),
        **_edit_and_web_tools(app, root, ran),
        **_exec_tools(app, root, ran),
        **_ticket_tools(app, root, ran),
        **_ticket_changes(app, root, ran),
    }
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise ValueError(f"unknown tools {unknown}; the suite has {sorted(every)}")
    return [every[name] for name in names]


def _file_tools(app: tether.App, root: Path, ran: list[str]) -> dict[str, Any]:
    @app.tool(side_effect="read_only", retry=ONCE)
    def list_files(path: str = ".") -> str:
        """List the files under a folder of the workspace, recursively."""
        ran.append("list_files")
        base = _inside(root, path)
        if not base.is_dir():
            raise ToolFailure(f"{path} is not a folder")
        found = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
        return "\n".join(found) or "(empty)"

    @app.tool(side_effect="read_only", retry=ONCE)
    def read_file(path: str) -> str:
        """Read a text file of the workspace."""
        ran.append("read_file")
        target = _inside(root, path)
        if not target.is_file():
            raise ToolFailure(f"no such file: {path}")
        return target.read_text()

    return {f.name: f for f in (list_files, read_file)}


def _edit_and_web_tools(app: tether.App, root: Path, ran: list[str]) -> dict[str, Any]:
    @app.tool(side_effect="idempotent", retry=ONCE)
    def write_file(path: str, content: str) -> str:
        """Write a text file of the workspace (folders are created)."""
        ran.append("write_file")
        target = _inside(root, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return f"wrote {len(content)} characters to {path}"

    @app.tool(side_effect="idempotent", retry=ONCE)
    def replace_in_file(path: str, old: str, new: str) -> str:
        """Replace the one occurrence of `old` in a file with `new`."""
        ran.append("replace_in_file")
        target = _inside(root, path)
        if not target.is_file():
            raise ToolFailure(f"no such file: {path}")
        text = target.read_text()
        count = text.count(old)
        if count != 1:
            raise ToolFailure(f"{old!r} occurs {count} times in {path}; it must occur once")
        target.write_text(text.replace(old, new))
        return f"replaced 1 occurrence in {path}"

    @app.tool(side_effect="effectful", retry=ONCE)
    def delete_file(path: str) -> str:
        """Delete a file of the workspace."""
        ran.append("delete_file")
        target = _inside(root, path)
        if not target.is_file():
            raise ToolFailure(f"no such file: {path}")
        target.unlink()
        return f"deleted {path}"

    @app.tool(side_effect="read_only", retry=ONCE)
    def web_search(query: str) -> str:
        """Search the web."""
        ran.append("web_search")
        return f"3 results for {query!r}: pages about {query}"

    @app.tool(side_effect="read_only", retry=ONCE)
    def fetch_url(url: str) -> str:
        """Fetch a web page (the workspace's web/ folder stands for the web)."""
        ran.append("fetch_url")
        pages = json.loads((root / "web" / "pages.json").read_text())
        if url not in pages:
            raise ToolFailure(f"404 not found: {url}")
        return str(pages[url])

    return {f.name: f for f in (write_file, replace_in_file, delete_file, web_search, fetch_url)}


def _exec_tools(app: tether.App, root: Path, ran: list[str]) -> dict[str, Any]:
    @app.tool(side_effect="effectful", retry=ONCE)
    def run_command(command: str) -> str:
        """Run a command in the workspace (python means this interpreter)."""
        ran.append("run_command")
        argv = shlex.split(command)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        try:
            done = subprocess.run(
                argv, cwd=root, capture_output=True, text=True, timeout=30, check=False
            )
        except FileNotFoundError as exc:
            raise ToolFailure(f"cannot run {command!r}: {exc}") from None
        output = (done.stdout + done.stderr).strip()
        return f"exit status {done.returncode}\n{output}"

    @app.tool(side_effect="read_only", retry=ONCE)
    def list_tables() -> str:
        """List the tables of the shop database with their columns."""
        ran.append("list_tables")
        with sqlite3.connect(f"file:{root / 'shop.db'}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
            return "\n".join(f"{name}: {sql}" for name, sql in rows)

    @app.tool(side_effect="read_only", retry=ONCE)
    def query_db(sql: str) -> str:
        """Run a read-only SQL query on the shop database; rows come back as CSV."""
        ran.append("query_db")
        conn = sqlite3.connect(f"file:{root / 'shop.db'}?mode=ro", uri=True)
        try:
            cursor = conn.execute(sql)
            header = ",".join(d[0] for d in cursor.description or ())
            rows = [",".join(str(v) for v in row) for row in cursor.fetchall()]
        except sqlite3.Error as exc:
            raise ToolFailure(f"SQL error: {exc}") from None
        finally:
            conn.close()
        return "\n".join([header, *rows]) if rows else f"{header}\n(no rows)"

    @app.tool(side_effect="effectful", retry=ONCE)
    def publish(path: str) -> str:
        """Publish a file of the workspace to published/ (for downstream readers)."""
        ran.append("publish")
        source = _inside(root, path)
        if not source.is_file():
            raise ToolFailure(f"no such file: {path}")
        (root / "published").mkdir(exist_ok=True)
        shutil.copy(source, root / "published" / source.name)
        return f"published {path} as published/{source.name}"

    @app.tool(side_effect="effectful", retry=ONCE)
    def send_email(to: str, subject: str, body: str) -> str:
        """Send an email."""
        ran.append("send_email")
        outbox = root / "outbox"
        outbox.mkdir(exist_ok=True)
        n = len(list(outbox.iterdir()))
        (outbox / f"{n}.json").write_text(json.dumps({"to": to, "subject": subject, "body": body}))
        return f"sent to {to}"

    return {f.name: f for f in (run_command, list_tables, query_db, publish, send_email)}


def _tickets(root: Path) -> list[dict[str, Any]]:
    return list(json.loads((root / "tickets.json").read_text()))


def _ticket_tools(app: tether.App, root: Path, ran: list[str]) -> dict[str, Any]:
    @app.tool(side_effect="read_only", retry=ONCE)
    def search_tickets(query: str, status: str = "any") -> str:
        """Search the tickets' titles for every word of `query`; status: open, closed or any."""
        ran.append("search_tickets")
        words = query.lower().split()
        found = [
            f"{t['id']} [{t['status']}] {t['title']}"
            for t in _tickets(root)
            if all(w in t["title"].lower() for w in words) and status in ("any", t["status"])
        ]
        return "\n".join(found) or "no tickets found"

    @app.tool(side_effect="read_only", retry=ONCE)
    def get_ticket(ticket_id: str) -> str:
        """Read one ticket: its status, priority, title, text and link."""
        ran.append("get_ticket")
        for t in _tickets(root):
            if t["id"] == ticket_id:
                return json.dumps(t, indent=1)
        raise ToolFailure(f"no ticket {ticket_id}")

    return {f.name: f for f in (search_tickets, get_ticket)}


def _ticket_changes(app: tether.App, root: Path, ran: list[str]) -> dict[str, Any]:
    @app.tool(side_effect="effectful", retry=ONCE)
    def add_comment(ticket_id: str, text: str) -> str:
        """Add a comment to a ticket."""
        ran.append("add_comment")
        tickets = _tickets(root)
        for t in tickets:
            if t["id"] == ticket_id:
                t.setdefault("comments", []).append(text)
                (root / "tickets.json").write_text(json.dumps(tickets, indent=1))
                return f"commented on {ticket_id}"
        raise ToolFailure(f"no ticket {ticket_id}")

    @app.tool(side_effect="effectful", retry=ONCE)
    def close_ticket(ticket_id: str) -> str:
        """Close a ticket."""
        ran.append("close_ticket")
        tickets = _tickets(root)
        for t in tickets:
            if t["id"] == ticket_id:
                t["status"] = "closed"
                (root / "tickets.json").write_text(json.dumps(tickets, indent=1))
                return f"closed {ticket_id}"
        raise ToolFailure(f"no ticket {ticket_id}")

    return {f.name: f for f in (add_comment, close_ticket)}
