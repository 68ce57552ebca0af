"""tether's agent demo: an agent answers questions about a folder of files, durably.

    make demo          (or: python examples/agent_demo.py [--workdir DIR] [--scripted])

The agent reads the files in examples/demo_data/ with its tools, writes a short report
(report.md) and ends with a structured answer. The answer is validated by a pydantic model and
then checked against the data by plain code; a rejected answer goes back to the model with
the reason. With no API key the model is tether's scripted model, whose script makes the run
meet, in order:

- a rate limit: a 429 with retry-after 1 s, waited out durably;
- an outage of the primary model (529 overloaded): two failures open its circuit breaker,
  shared through the database, and the run fails over to the fallback model;
- two rejected answers: one the pydantic model rejects, one the check against the data
  rejects; each goes back to the model, which corrects it;
- a SIGKILL: the demo runs the worker as a child process and kills it while the first model
  call after the report was written is in flight (that worker waits there, as a slow model
  would, so the kill lands at the same point on every run). A new worker resumes the run
  from its journal: it sends no recorded model call again and runs no tool again.

With OPENAI_API_KEY or ANTHROPIC_API_KEY set (and `pip install 'tether[openai]'` or
`'tether[anthropic]'`), the same agent runs on the real models (OpenAI first when both keys
are set; TETHER_DEMO_OPENAI_MODEL and TETHER_DEMO_ANTHROPIC_MODEL choose the models). No
faults are injected then; the kill and the resume still happen.

At the end the demo prints a timeline read from the run's journal and from two ledgers the
demo keeps outside it (which process sent each model call, which process ran each tool), the
report, the checks, and where to look next. It exits with 0 when the run succeeded and its
report passed the checks (and, on the scripted model, when the run met every event above).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import dataclasses
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import pydantic
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel

import tether
from tether.agent import Agent, Budget, Model, ServicePolicy, Services
from tether.agent.providers import scripted as s
from tether.agent.types import (
    ErrorKind,
    Message,
    ModelRequest,
    ModelResponse,
    OnToken,
    Provider,
    ProviderError,
)

RUN_ID = "inventory-report"
DATA_DIR = Path(__file__).resolve().parent / "demo_data"
TASK = """\
Answer these questions about the files in the data folder (list_files, read_file):
1. How many units are in stock in total, over all products?
2. Which product has the highest stock value (units x unit price), and what is that value?
3. Which products are below their reorder point, and which of their suppliers can restock
   soonest (shortest lead time)?
4. Which discontinued products still hold stock?
Write the answers as a short markdown report with write_report, then reply with the answers
as JSON."""
INSTRUCTIONS = """\
You answer questions about files precisely, from their contents only. Your final reply is
JSON only, following this schema: {schema}"""


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    """The demo's command line (the workers get theirs from the demo)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path(".tether/agent-demo"))
    parser.add_argument("--scripted", action="store_true", help="use the scripted model")
    parser.add_argument("--worker", choices=["scripted", "live"], help=argparse.SUPPRESS)
    parser.add_argument("--kill-point", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


OPTIONS = parse_options(sys.argv[1:])
WORKDIR: Path = OPTIONS.workdir.resolve()
DB_URL = f"sqlite:///{WORKDIR / 'demo.db'}"
REPORT = WORKDIR / "report.md"
CALLS_LEDGER = WORKDIR / "model-calls.jsonl"  # every call a provider received, by which pid
TOOLS_LEDGER = WORKDIR / "tool-runs.jsonl"  # every execution of a tool's body, by which pid
KILL_MARKER = WORKDIR / "kill-point.json"

app = tether.App(DB_URL)


# -- the agent's tools ------------------------------------------------------------------------


@app.tool(side_effect="read_only")
def list_files() -> list[dict[str, Any]]:
    """List the files in the data folder, with their sizes in bytes."""
    note_run("list_files")
    return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(DATA_DIR.iterdir())]


@app.tool(side_effect="read_only")
def read_file(
    name: Annotated[str, pydantic.Field(description="a file name that list_files gave")],
) -> str:
    """Read one file of the data folder, as text."""
    note_run("read_file")
    path = DATA_DIR / name
    if path.parent != DATA_DIR or not path.is_file():
        known = ", ".join(p.name for p in sorted(DATA_DIR.iterdir()))
        raise ValueError(f"there is no file {name!r} in the data folder; the files: {known}")
    return path.read_text(encoding="utf-8")


@app.tool(side_effect="effectful")
def write_report(
    markdown: Annotated[str, pydantic.Field(description="the whole report, as markdown")],
) -> str:
    """Write the report (report.md), replacing any earlier one."""
    note_run("write_report")
    partial = REPORT.with_suffix(".partial")
    partial.write_text(markdown, encoding="utf-8")
    os.replace(partial, REPORT)  # whole or not at all
    return f"wrote {REPORT.name} ({len(markdown.encode())} bytes)"


def note_run(tool: str) -> None:
    """Append this execution to the tools ledger (the demo's witness, outside the journal)."""
    key = tether.context().idempotency_key  # the same on every retry and replay of the call
    append_line(TOOLS_LEDGER, {"tool": tool, "pid": os.getpid(), "at": time.time(), "key": key})


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with one O_APPEND write, fsynced: a kill cannot split it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a ledger file (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# -- the answer, and the check against the data -------------------------------------------------


class StockValue(pydantic.BaseModel):
    sku: str
    value: float = pydantic.Field(description="units x unit price, in EUR")


class Findings(pydantic.BaseModel):
    """The agent's structured answer."""

    total_units: int = pydantic.Field(description="question 1")
    most_valuable: StockValue = pydantic.Field(description="question 2")
    below_reorder: list[str] = pydantic.Field(description="question 3: the SKUs")
    restock_first: str = pydantic.Field(description="question 3: the supplier's name")
    discontinued_in_stock: list[str] = pydantic.Field(description="question 4: the SKUs")
    report_file: str = pydantic.Field(description="the file write_report wrote")


class Facts(pydantic.BaseModel):
    """The answers, computed from the data by plain code: what the checks compare against."""

    total_units: int
    most_valuable: StockValue
    below_reorder: list[str]
    restock_first: str
    discontinued_in_stock: list[str]


class Check(pydantic.BaseModel):
    name: str
    ok: bool
    detail: str


@app.step(name="facts")
async def compute_facts() -> Facts:
    """Read the data and compute each answer (journaled, so every check uses these)."""
    rows = list(csv.DictReader(io.StringIO((DATA_DIR / "inventory.csv").read_text())))
    units = {r["sku"]: int(r["units"]) for r in rows}
    values = {r["sku"]: round(int(r["units"]) * float(r["unit_price"]), 2) for r in rows}
    top = max(values, key=lambda sku: values[sku])
    low = sorted(r["sku"] for r in rows if int(r["units"]) < int(r["reorder_point"]))
    lead = {}
    for line in (DATA_DIR / "suppliers.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[2].isdigit():
            lead[cells[0]] = int(cells[2])
    suppliers = {r["supplier"] for r in rows if r["sku"] in low}
    notes = (DATA_DIR / "notes.txt").read_text().splitlines()
    gone = [line[2:].split()[0] for line in notes if line.startswith("- ")]
    return Facts(
        total_units=sum(units.values()),
        most_valuable=StockValue(sku=top, value=values[top]),
        below_reorder=low,
        restock_first=min(suppliers, key=lambda name: lead[name]),
        discontinued_in_stock=sorted(sku for sku in gone if units.get(sku, 0) > 0),
    )


def disagreements(found: Findings, facts: Facts) -> list[str]:
    """Where the answer disagrees with the data, said without giving the answer away."""
    problems = []
    for field in ("total_units", "restock_first"):
        if getattr(found, field) != getattr(facts, field):
            problems.append(f"{field} is {getattr(found, field)!r}, which the data contradicts")
    if found.most_valuable.sku != facts.most_valuable.sku:
        problems.append(f"most_valuable.sku is {found.most_valuable.sku!r}; recompute the values")
    elif abs(found.most_valuable.value - facts.most_valuable.value) > 0.005:
        problems.append(f"most_valuable.value is {found.most_valuable.value}; recompute it")
    for field in ("below_reorder", "discontinued_in_stock"):
        got, want = set(getattr(found, field)), set(getattr(facts, field))
        if got - want:
            problems.append(f"{field} lists {sorted(got - want)}, which the data contradicts")
        if want - got:
            problems.append(f"{field} misses {len(want - got)} SKU(s)")
    return problems


def answer_checker(facts: Facts) -> Any:
    """The agent's output validator: the pydantic model first, then the data.

    It runs in workflow code and depends only on the answer's text and the journaled facts, so
    a replay reaches the same verdict.
    """

    def check(text: str) -> Findings:
        found = Findings.model_validate_json(unfence(text))
        problems = disagreements(found, facts)
        if problems:
            raise ValueError("; ".join(problems))
        return found

    return check


def unfence(text: str) -> str:
    """The JSON inside a ```json fence, or the text."""
    match = re.fullmatch(r"\s*```[a-z]*\s*\n(.*?)\n?```\s*", text, re.DOTALL)
    return match.group(1) if match else text


@app.step(name="check_report")
async def check_report(found: Findings, facts: Facts) -> list[Check]:
    """Check the report file itself against the data: every answer must appear in it."""
    if not REPORT.exists():
        return [Check(name="report.md exists", ok=False, detail="write_report never ran")]
    text = REPORT.read_text(encoding="utf-8")
    plain = re.sub(r"(?<=\d)[,\u202f ](?=\d{3}\b)", "", text)  # 1,240 -> 1240
    numbers = {float(n) for n in re.findall(r"\d+(?:\.\d+)?", plain)}
    checks = [
        Check(
            name="structured answer",
            ok=not disagreements(found, facts),
            detail="agrees with the answers computed from the data",
        ),
        Check(name="report.md exists", ok=True, detail=f"{len(text)} characters"),
        _number("total units", facts.total_units, numbers),
        _number("highest stock value", facts.most_valuable.value, numbers),
    ]
    words = [("most valuable product", facts.most_valuable.sku)]
    words += [("below reorder point", sku) for sku in facts.below_reorder]
    words += [("restock first", facts.restock_first)]
    words += [("discontinued in stock", sku) for sku in facts.discontinued_in_stock]
    for name, word in words:
        ok = word.lower() in text.lower()
        checks.append(Check(name=name, ok=ok, detail=f"{word} {'in' if ok else 'NOT in'} report"))
    return checks


def _number(name: str, value: float, numbers: set[float]) -> Check:
    ok = any(abs(n - value) < 0.005 for n in numbers)
    return Check(name=name, ok=ok, detail=f"{value:g} {'in' if ok else 'NOT in'} report")


# -- the models ---------------------------------------------------------------------------------

REPORT_TEXT = """\
# Stock review

1. **Units in stock:** 1240 units over 9 products.
2. **Highest stock value:** D-405 (LED panel 60x60), 72 x 54.00 = 3888.00 EUR.
3. **Below reorder point:** A-115 (95 < 120, Nordbolt) and C-325 (38 < 50, Linea Supply).
   Restock first from **Linea Supply** (5 days; Nordbolt takes 12).
4. **Discontinued, still in stock:** B-220 (60 units) and D-410 (15 units); F-600 is sold out.
"""
ANSWER = {
    "total_units": 1240,
    "most_valuable": {"sku": "D-405", "value": 3888.0},
    "below_reorder": ["A-115", "C-325"],
    "restock_first": "Linea Supply",
    "discontinued_in_stock": ["B-220", "D-410"],
    "report_file": "report.md",
}


def script() -> list[s.Turn]:
    """The scripted model's turns (both scripted providers play the same script)."""
    outage = s.overloaded(model="model-a", times=None)  # the primary is down from turn 2 on
    reads = [("read_file", {"name": n}) for n in ("inventory.csv", "suppliers.md", "notes.txt")]
    return [
        s.call("list_files").failing(s.rate_limited(retry_after=1.0, model="model-a")),
        s.calls(*reads),
        s.call("write_report", markdown=REPORT_TEXT).failing(outage),
        s.answer({**ANSWER, "total_units": "1,240"}).failing(outage),  # not an integer
        s.answer({**ANSWER, "discontinued_in_stock": ["B-220", "D-410", "F-600"]}).failing(outage),
        s.answer(ANSWER).failing(outage),
    ]


def scripted_chain() -> list[Model]:
    """Two scripted providers: the primary and the fallback, each its own service."""
    ledger = WORKDIR / "scripted.ledger"  # attempt counts that survive the kill
    primary = s.ScriptedProvider(script(), name="primary", ledger=ledger)
    fallback = s.ScriptedProvider(script(), name="fallback", ledger=ledger)
    return [Model(Witnessed(primary), "model-a"), Model(Witnessed(fallback), "model-b")]


def has_sdk(key: str) -> bool:
    """Whether the SDK of the provider that `key` ("OPENAI_API_KEY" ...) is for is installed."""
    return importlib.util.find_spec(key.split("_")[0].lower()) is not None


def live_chain() -> list[Model]:
    """The real models whose keys are set and SDKs installed, OpenAI first."""
    chain = []
    if os.environ.get("OPENAI_API_KEY") and has_sdk("OPENAI_API_KEY"):
        from tether.agent.providers.openai import OpenAIProvider

        name = os.environ.get("TETHER_DEMO_OPENAI_MODEL", "gpt-4o-mini")
        chain.append(Model(Witnessed(OpenAIProvider()), name, timeout=60.0))
    if os.environ.get("ANTHROPIC_API_KEY") and has_sdk("ANTHROPIC_API_KEY"):
        from tether.agent.providers.anthropic import AnthropicProvider

        name = os.environ.get("TETHER_DEMO_ANTHROPIC_MODEL", "claude-haiku-4-5")
        chain.append(Model(Witnessed(AnthropicProvider()), name, timeout=60.0))
    return chain


class Witnessed:
    """A provider as the demo watches it: each call it receives is written to a ledger.

    In the first worker (`--kill-point`), the first model call after the report was written
    tells the demo and then waits, as a slow model would, so that the demo's SIGKILL lands
    there on every run.
    """

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name

    async def complete(
        self,
        request: ModelRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - the Provider protocol's parameter
        on_token: OnToken | None = None,
    ) -> ModelResponse:
        """Answer through the wrapped provider, ledger first."""
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if OPTIONS.kill_point and wrote_report(request.messages):
            mark: dict[str, Any] = {"pid": os.getpid(), "at": time.time(), "turn": turn}
            mark["model"] = f"{self.name}:{request.model}"
            append_line(KILL_MARKER, mark)
            await in_flight_until_killed()
        record = {"provider": self.name, "model": request.model, "turn": turn}
        record |= {"pid": os.getpid(), "at": time.time()}
        try:
            response = await self.inner.complete(request, timeout=timeout, on_token=on_token)
        except ProviderError as exc:
            append_line(CALLS_LEDGER, {**record, "outcome": ErrorKind(exc.kind).value})
            raise
        append_line(CALLS_LEDGER, {**record, "outcome": "ok"})
        return response


async def in_flight_until_killed() -> None:
    """Wait for the demo's SIGKILL; should the demo itself die first, exit.

    The demo never writes to this worker's stdin: reading it returns only when the demo's end
    of the pipe closes, that is when the demo is gone.
    """
    await asyncio.to_thread(sys.stdin.buffer.read)
    os._exit(1)


def wrote_report(messages: Sequence[Message]) -> bool:
    return any(m.role == "tool" and m.name == "write_report" for m in messages)


CHAIN = scripted_chain() if OPTIONS.worker != "live" else live_chain()
POLICY = ServicePolicy(failure_threshold=2, window=60.0, cooldown=300.0)
_services: list[Services] = []


def services() -> Services:
    """The circuit breakers, in the app's database: every worker sees the same ones."""
    if not _services:
        _services.append(Services(app.store, default=POLICY))
    return _services[0]


# -- the workflow ---------------------------------------------------------------------------


class Outcome(pydantic.BaseModel):
    findings: Findings
    checks: list[Check]
    model: str
    model_calls: int
    tool_calls: int
    tokens: int


@app.workflow(name="inventory_report")
async def inventory_report(task: str) -> Outcome:
    facts = await compute_facts()
    agent = Agent(
        model=CHAIN,
        tools=[list_files, read_file, write_report],
        instructions=INSTRUCTIONS.format(schema=json.dumps(Findings.model_json_schema())),
        output=answer_checker(facts),
        budget=Budget(max_steps=40, max_tokens=300_000, max_time=300),
        retry=tether.Retry(attempts=3, initial_delay=0.25, backoff=2.0, jitter=0.0),
        services=services(),
        output_retries=3,
    )
    result = await agent.run(task)
    checks = await check_report(result.output, facts)
    return Outcome(
        findings=result.output,
        checks=checks,
        model=result.model,
        model_calls=result.model_calls,
        tool_calls=result.tool_calls,
        tokens=result.usage.total_tokens,
    )


async def worker() -> None:
    """A worker process: it runs (or resumes) the run and waits for its end."""
    async with app:  # entering resumes the unfinished runs left by dead processes
        handle = await app.start(inventory_report, TASK, id=RUN_ID)  # same id: same run
        await handle.result()


# -- the demo: two worker processes, a SIGKILL between them, and what the journal shows ---------

console = Console(highlight=False, soft_wrap=True)


@dataclasses.dataclass
class Workers:
    """What happened to the worker processes, on the demo's clock (Unix seconds)."""

    t0: float
    first: int = 0
    killed_at: float | None = None
    kill_turn: int | None = None
    second: int | None = None
    second_at: float | None = None
    ended_at: float = 0.0

    def who(self, at: float) -> str:
        """Which worker journaled an entry at `at` (the first one is dead after the kill)."""
        return "w1" if self.killed_at is None or at <= self.killed_at else "w2"


def choose_mode() -> str:
    """`live` when a key is set and its SDK installed (and --scripted not given)."""
    keys = [k for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") if os.environ.get(k)]
    if OPTIONS.scripted or not keys:
        return "scripted"
    for key in keys:
        if not has_sdk(key):
            sdk = key.split("_")[0].lower()
            console.print(f"[yellow]{key} is set, but pip install 'tether[{sdk}]' is not done[/]")
    return "live" if any(has_sdk(k) for k in keys) else "scripted"


def spawn(mode: str, index: int, *extra: str) -> subprocess.Popen[bytes]:
    """Start a worker process; its output goes to worker-N.log in the work directory."""
    argv = [sys.executable, __file__, "--workdir", str(WORKDIR), "--worker", mode, *extra]
    log = (WORKDIR / f"worker-{index}.log").open("wb")
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)


def wait_for_kill_point(proc: subprocess.Popen[bytes], limit: float) -> dict[str, Any] | None:
    """The kill point's record once the worker reaches it; None if the worker exits first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        marks = read_lines(KILL_MARKER)
        if marks:
            return marks[0]
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    raise TimeoutError(f"worker 1 reached no kill point in {limit:g}s; see worker-1.log")


def run_workers(mode: str) -> Workers:
    """Worker 1 runs until the kill point, is SIGKILLed; worker 2 resumes and finishes."""
    workers = Workers(t0=time.time())
    first = spawn(mode, 1, "--kill-point")
    workers.first = first.pid
    console.print(f"[bold]1.[/] worker 1 (pid {first.pid}) starts the run {RUN_ID!r}")
    mark = wait_for_kill_point(first, limit=120.0)
    if mark is None:
        if finish(first, 1, limit=10.0) == 0:
            console.print("   the run ended before the kill point (the model wrote no report)")
        workers.ended_at = time.time()
        return workers
    first.send_signal(signal.SIGKILL)
    first.wait()
    workers.killed_at, workers.kill_turn = time.time(), mark["turn"]
    console.print(
        f"[bold]2.[/] [red]SIGKILL[/] worker 1 (pid {first.pid}) at "
        f"+{workers.killed_at - workers.t0:.2f}s, while model call #{mark['turn'] + 1} "
        "(the first after the report was written) was in flight"
    )
    second = spawn(mode, 2)
    workers.second, workers.second_at = second.pid, time.time()
    console.print(f"[bold]3.[/] worker 2 (pid {second.pid}) starts and resumes the run")
    code = finish(second, 2, limit=120.0)
    workers.ended_at = time.time()
    console.print(f"   worker 2 exited with code {code}")
    return workers


def finish(proc: subprocess.Popen[bytes], index: int, limit: float) -> int:
    """Wait for a worker's exit (SIGKILL it after `limit` seconds); show its log if it failed."""
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        console.print(f"[red]worker {index} did not finish within {limit:g}s; killed[/]")
    if code != 0:
        log = (WORKDIR / f"worker-{index}.log").read_text(errors="replace")
        console.print(f"[red]worker {index} exited with code {code}; its log ends:[/]")
        console.print(log[-3000:], markup=False)
    return code


@dataclasses.dataclass
class Seen:
    """The events the timeline met (the scripted run must show each of them)."""

    rate_limit_waited: bool = False
    breaker_opened: bool = False
    failover: bool = False
    rejected: int = 0
    killed: bool = False
    resumed: bool = False

    def missing(self) -> list[str]:
        wanted = {
            "a 429 waited out": self.rate_limit_waited,
            "a circuit breaker opening": self.breaker_opened,
            "a failover": self.failover,
            "a rejected answer corrected": self.rejected > 0,
            "a SIGKILL": self.killed,
            "a resume in a new worker": self.resumed,
        }
        return [name for name, ok in wanted.items() if not ok]


class Timeline:
    """The run's journal, entry by entry, with who did what and when."""

    def __init__(self, steps: list[tether.StepInfo], errors: dict[int, dict[str, Any]]) -> None:
        self.steps = steps
        self.errors = errors
        self.facts = Facts.model_validate(steps[0].output) if steps else None
        self.failures: collections.Counter[str] = collections.Counter()
        self.seen = Seen()

    def error(self, index: int) -> dict[str, Any]:
        """The error attributes of the entry at `index` ({} for a success)."""
        return self.errors.get(self.steps[index].seq, {}) if index >= 0 else {}

    def show(self, workers: Workers) -> None:
        console.rule("[bold]timeline[/] (from the journal; w1 = worker 1, w2 = worker 2)")
        kill_shown = workers.killed_at is None
        for index, step in enumerate(self.steps):
            if not kill_shown and step.ended_at > (workers.killed_at or 0):
                self.show_kill(workers, index)
                kill_shown = True
            kind, text = self.describe(index, step)
            took = max(step.ended_at - step.started_at, 0.0)
            console.print(
                f"{step.started_at - workers.t0:+7.2f}s  {workers.who(step.ended_at)}  "
                f"#{step.seq:<3} {kind:<6} {text}  [dim]{took * 1000:.0f} ms[/]"
            )
        if not kill_shown:
            self.show_kill(workers, len(self.steps))

    def show_kill(self, workers: Workers, replayed: int) -> None:
        mark = read_lines(KILL_MARKER)[0]
        self.seen.killed = True
        console.print(
            f"{mark['at'] - workers.t0:+7.2f}s  w1  ...  model  {mark['model']}  call "
            f"#{mark['turn'] + 1} in flight"
        )
        console.print(
            f"{(workers.killed_at or 0) - workers.t0:+7.2f}s  [red]SIGKILL worker 1 "
            f"(pid {workers.first})[/]: its call was never answered nor journaled"
        )
        console.print(
            f"{(workers.second_at or 0) - workers.t0:+7.2f}s  w2  worker 2 (pid "
            f"{workers.second}) starts, finds the run of the dead process and replays its "
            f"{replayed} journal entries (#0-#{replayed - 1}) without running them again"
        )
        self.seen.resumed = workers.second is not None

    def describe(self, index: int, step: tether.StepInfo) -> tuple[str, str]:
        if step.name.startswith("llm:"):
            return "model", self.model_call(index, step)
        if step.name.startswith("tool:"):
            return "tool", f"{step.name[5:]} -> {short(str(step.output), 60)}"
        if step.name == "tether.sleep":
            if self.error(index - 1).get("kind") == "rate_limited":
                self.seen.rate_limit_waited = True
            return "wait", f"{step.ended_at - step.started_at:.2f}s (a durable tether.sleep)"
        if step.name == "check_report":
            checks = [Check.model_validate(c) for c in step.output or []]
            passed = sum(c.ok for c in checks)
            return "check", f"report.md against the data: {passed} of {len(checks)} checks pass"
        return OTHER_STEPS.get(step.name, ("step", step.name))

    def model_call(self, index: int, step: tether.StepInfo) -> str:
        label = step.name[4:]
        if step.status != "ok":
            return f"{label}  [yellow]{self.failure(index, step)}[/]{self.after_failure(index)}"
        message, usage = step.output["message"], step.output["usage"]
        tokens = f"[dim]({usage['input_tokens']}+{usage['output_tokens']} tokens)[/]"
        if message.get("tool_calls"):
            asked = ", ".join(call_text(c) for c in message["tool_calls"])
            return f"{label}  asks for {asked}  {tokens}"
        problem = self.verdict(message["content"])
        if problem is None:
            return f"{label}  final answer: [green]accepted[/]  {tokens}"
        self.seen.rejected += 1
        rejected = f"final answer [yellow]rejected: {problem}[/] -> sent back to the model"
        return f"{label}  {rejected}  {tokens}"

    def failure(self, index: int, step: tether.StepInfo) -> str:
        error = self.error(index)
        kind, service = error.get("kind"), error.get("service")
        if service is not None and "retry_at" in error:
            return f"not called: the circuit breaker of {service!r} is open"
        if kind == "rate_limited":
            return f"429 rate limited, retry-after {error.get('retry_after')}s"
        status = f"{error['status']} " if error.get("status") else ""
        text = f"{status}{kind}"
        if kind in {"overloaded", "server_error", "timeout", "connection"}:
            provider = str(error.get("provider"))
            self.failures[provider] += 1
            if self.failures[provider] == POLICY.failure_threshold:
                self.seen.breaker_opened = True
                text += f" -> {self.failures[provider]} failures: the breaker of {provider!r} opens"
        return text or short(step.error_message or "", 60)

    def after_failure(self, index: int) -> str:
        label = self.steps[index].name[4:]
        later = (s.name[4:] for s in self.steps[index + 1 :] if s.name.startswith("llm:"))
        following = next(later, None)
        if following is not None and following != label:
            self.seen.failover = True
            return f" -> [bold]fail over to {following}[/]"
        return ""

    def verdict(self, text: str) -> str | None:
        """Why the agent's validator rejected `text` (the same verdict it reached), or None."""
        assert self.facts is not None
        try:
            answer_checker(self.facts)(text)
        except pydantic.ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
        except ValueError as exc:
            return str(exc)
        return None


OTHER_STEPS = {
    "facts": ("facts", "the answers computed from the data by plain code, for the checks"),
    "agent:start": ("agent", "the agent's run starts (its start time is journaled)"),
}


def call_text(call: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={short(repr(v), 28)}" for k, v in call["arguments"].items())
    return f"{call['name']}({args})"


def short(text: str, width: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else f"{text[: width - 1]}... ({len(text)} chars)"


def error_attributes() -> dict[int, dict[str, Any]]:
    """Each failed journal entry's error attributes (kind, status, retry_after, service)."""
    records = app.store.load_steps(RUN_ID)
    return {
        r.seq: {**json.loads(r.error).get("attributes", {}), "type": json.loads(r.error)["type"]}
        for r in records
        if r.error is not None
    }


def ledger_findings(workers: Workers, steps: list[tether.StepInfo]) -> list[tuple[bool, str]]:
    """What the ledgers kept outside the journal say about model calls and tool runs."""
    calls, runs = read_lines(CALLS_LEDGER), read_lines(TOOLS_LEDGER)
    answered = collections.Counter(
        (c["provider"], c["turn"]) for c in calls if c["outcome"] == "ok"
    )
    per_worker = {w: sum(1 for c in calls if workers.who(c["at"]) == w) for w in ("w1", "w2")}
    resent = [
        c for c in calls if c["pid"] == workers.second and c["turn"] < (workers.kill_turn or 0)
    ]
    tool_steps = sum(1 for st in steps if st.name.startswith("tool:"))
    keys = [r["key"] for r in runs]
    by_tool = collections.Counter(r["tool"] for r in runs)
    first_keys = {r["key"] for r in runs if r["pid"] != workers.second}
    again = sum(1 for r in runs if r["pid"] == workers.second and r["key"] in first_keys)
    return [
        (
            all(n == 1 for n in answered.values()) and not resent,
            f"the providers received {len(calls)} model calls (worker 1: {per_worker['w1']}, "
            f"worker 2: {per_worker['w2']}); each of the {len(answered)} answers was paid for "
            "once, and worker 2 sent none of the calls journaled before the kill",
        ),
        (
            len(keys) == len(set(keys)) == tool_steps,
            "tool bodies ran once per call: "
            + ", ".join(f"{name} x{n}" for name, n in sorted(by_tool.items()))
            + f"; worker 2 ran {again or 'none'} of them again",
        ),
    ]


def service_lines(workers: Workers) -> list[str]:
    """Each model service's circuit breaker, as every worker sees it in the database."""
    calls = read_lines(CALLS_LEDGER)
    lines = []
    for row in app.store.list_services():
        state = services().state(row.name)
        if state.opened_until is None:
            lines.append(f"{state.service}: {state.state} ({state.failures} failures counted)")
            continue
        wait = max(state.opened_until - state.at, 0)
        line = f"{state.service}: {state.state}, calls refused for {wait:.0f}s more"
        if workers.second is not None:
            sent = sum(1 for c in calls if c["provider"] == row.name and c["pid"] == workers.second)
            line += f"; worker 2 read it from the database and sent {row.name!r} {sent} calls"
        lines.append(line)
    return lines


async def report(workers: Workers, mode: str) -> int:
    """Print the timeline, the report, the checks and what the ledgers show; the exit code."""
    handle = app.retrieve(RUN_ID)
    status = await handle.status()
    steps = await handle.steps()
    timeline = Timeline(steps, error_attributes())
    timeline.show(workers)
    console.print(f"[dim]run {status.value.lower()} in {workers.ended_at - workers.t0:.1f}s[/]")
    ok = status == tether.Status.SUCCEEDED and show_outcome(await handle.result())
    if status != tether.Status.SUCCEEDED:
        console.print(
            f"[red]the run did not succeed ({status.value})[/]; the worker log above says why"
        )
    console.rule("[bold]what the ledgers outside the journal show[/]")
    for good, text in ledger_findings(workers, steps):
        console.print(f"{'[green]ok[/]' if good else '[red]NOT OK[/]'}  {text}")
        ok = ok and good
    for line in service_lines(workers):
        console.print(f"    circuit breaker {line}")
    missing = timeline.seen.missing()
    if mode == "scripted" and missing:
        console.print(f"[red]the run was meant to show {', '.join(missing)}, and did not[/]")
        ok = False
    where_to_look()
    return 0 if ok else 1


def show_outcome(outcome: Outcome) -> bool:
    """Print the report, the answer and the checks; whether every check passed."""
    console.rule("[bold]the report[/] (report.md, written by the write_report tool)")
    console.print(Panel(Markdown(REPORT.read_text(encoding="utf-8"))), soft_wrap=False)
    console.print(f"structured answer ({outcome.model}): {outcome.findings.model_dump_json()}")
    console.print(
        f"[dim]{outcome.model_calls} model answers, {outcome.tool_calls} tool calls, "
        f"{outcome.tokens} tokens[/]"
    )
    for check in outcome.checks:
        console.print(
            f"  {'[green]ok[/]' if check.ok else '[red]FAILED[/]'}  {check.name}: {check.detail}"
        )
    passed = all(c.ok for c in outcome.checks)
    console.print("check: " + ("[green]passed[/]" if passed else "[red]failed[/]"))
    return passed


def where_to_look() -> None:
    tether_cli = Path(sys.executable).parent / "tether"
    cli = os.path.relpath(tether_cli) if tether_cli.exists() else "tether"
    here = os.path.relpath(WORKDIR)
    folder = WORKDIR if here.startswith("..") else Path(here)
    db = f"sqlite:///{folder / 'demo.db'}"
    console.rule("[bold]where to look next[/]")
    console.print(f"  {cli} workflows show {RUN_ID} --db {db}   # every step and its timing")
    console.print(f"  {cli} services list --db {db}   # the circuit breakers")
    console.print(f"  {folder}/  report.md, the two ledgers, worker-1.log, worker-2.log")
    console.print("  docs/agents.md (the agent loop), docs/services.md (breakers and budgets)")


def prepare() -> None:
    """A fresh work directory: the demo starts from an empty database every time."""
    WORKDIR.mkdir(parents=True, exist_ok=True)
    for name in ("demo.db", "demo.db-wal", "demo.db-shm", "report.md", "scripted.ledger"):
        (WORKDIR / name).unlink(missing_ok=True)
    for path in (CALLS_LEDGER, TOOLS_LEDGER, KILL_MARKER):
        path.unlink(missing_ok=True)


def intro(mode: str) -> None:
    console.rule("[bold]tether agent demo[/]")
    if mode == "scripted":
        console.print(
            "model chain: primary:model-a, then fallback:model-b: two scripted models (no keys,\n"
            "no network). The primary answers a 429 first and is down (529) from its 3rd turn;\n"
            "two of the final answers are wrong. Set OPENAI_API_KEY or ANTHROPIC_API_KEY to run\n"
            "on a real model instead."
        )
    else:
        labels = ", then ".join(f"{m.provider.name}:{m.name}" for m in live_chain())
        console.print(
            f"model chain: {labels} (real models). No faults are injected: rate limits,\n"
            "outages and failovers show only if they happen; the kill and resume still do."
        )
    console.print(f"data: {DATA_DIR}   database: {DB_URL}\n")


def main() -> int:
    mode = choose_mode()
    prepare()
    intro(mode)
    workers = run_workers(mode)
    return asyncio.run(report(workers, mode))


if __name__ == "__main__":
    if OPTIONS.worker:
        asyncio.run(worker())
    else:
        sys.exit(main())
