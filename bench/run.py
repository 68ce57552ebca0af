"""`make bench`: every benchmark on every backend, printed beside the floor of the same run.

    python bench/run.py [--backends sqlite sqlite-full postgres] [--quick]

Floors: a loop of one small INSERT + COMMIT with the same durability settings (bench_floor).
Results are printed as a table and saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench_agent
import bench_concurrent
import bench_floor
import bench_recovery
import bench_seq

from benchlib import BACKENDS, fresh_database

RESULTS = Path(__file__).parent / "results"


def run_backend(backend: str, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with fresh_database(backend) as env:
        out["seq"] = asyncio.run(bench_seq.measure(env, n=100 if quick else 300))
    out["concurrent"] = {}
    for conc in (1, 16, 64):
        with fresh_database(backend) as env:
            r = asyncio.run(bench_concurrent.measure(env, conc, seconds=1.5 if quick else 4.0))
        out["concurrent"][conc] = r["steps_per_s"]
    with fresh_database(backend) as env:
        out["recovery"] = bench_recovery.measure(env, n=100, steps=10, sleep_ms=10.0)
    if backend != "sqlite-full":
        out["waiting"] = waiting(backend, 2_000 if quick else 10_000)
    with fresh_database(backend) as env:
        out["agent"] = asyncio.run(bench_agent.measure(env, n=100 if quick else 500))
    return out


def waiting(backend: str, n: int) -> dict[str, Any]:
    """bench_waiting in a process of its own, so its memory figures are its own."""
    script = Path(__file__).parent / "bench_waiting.py"
    done = subprocess.run(
        [sys.executable, str(script), "--backend", backend, "--n", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


def report(floor: dict[str, float], results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        f"{'':22s}" + "".join(f"{b:>16s}" for b in results),
        "floor: INSERT+COMMIT  " + "".join(f"{floor[f'{b}_us']:13.1f} us" for b in results),
    ]

    def row(label: str, fn: Any) -> None:
        lines.append(f"{label:22s}" + "".join(f"{fn(b, r):>16s}" for b, r in results.items()))

    row("step (async)", lambda b, r: f"{r['seq']['step_async_us']:.1f} us")
    row("  x floor", lambda b, r: f"{r['seq']['step_async_us'] / floor[f'{b}_us']:.2f}x")
    row("step (plain def)", lambda b, r: f"{r['seq']['step_sync_us']:.1f} us")
    row("  x floor", lambda b, r: f"{r['seq']['step_sync_us'] / floor[f'{b}_us']:.2f}x")
    row("workflow, 0 steps", lambda b, r: f"{r['seq']['workflow_us'] / 1000:.2f} ms")
    for conc in (1, 16, 64):
        row(f"steps/s, {conc} concurrent", lambda b, r, c=conc: f"{r['concurrent'][c]:,}")
    row("  64 vs floor rate", lambda b, r: f"{r['concurrent'][64] * floor[f'{b}_us'] / 1e6:.1f}x")
    row("restart->1st step", lambda b, r: f"{r['recovery']['restart_to_first_step_s']:.3f} s")
    row("app start->1st step", lambda b, r: f"{r['recovery']['app_start_to_first_step_s']:.3f} s")
    row("waiting runs", lambda b, r: f"{r['waiting']['n']:,}" if "waiting" in r else "-")
    row(
        "  RSS, all waiting",
        lambda b, r: f"{r['waiting']['rss_all_waiting_mb']:.0f} MB" if "waiting" in r else "-",
    )
    row(
        "  RSS, peak",
        lambda b, r: f"{r['waiting']['rss_peak_mb']:.0f} MB" if "waiting" in r else "-",
    )
    row(
        "  wake all by msgs",
        lambda b, r: f"{r['waiting']['wake_all_by_messages_s']:.1f} s" if "waiting" in r else "-",
    )
    row("re-ran checkpointed", lambda b, r: str(r["recovery"]["reran_checkpointed_steps"]))
    row("llm call, SDK direct", lambda b, r: f"{r['agent']['sdk_us'] / 1000:.2f} ms")
    row("  + provider", lambda b, r: f"{r['agent']['provider_minus_sdk_us'] / 1000:+.2f} ms")
    row("  + durable step", lambda b, r: f"{r['agent']['step_minus_sdk_us'] / 1000:+.2f} ms")
    row("agent llm call, SDK", lambda b, r: f"{r['agent']['agent_sdk_us'] / 1000:.2f} ms")
    row("  + agent path", lambda b, r: f"{r['agent']['agent_minus_sdk_us'] / 1000:+.2f} ms")
    row("  + Services gate", lambda b, r: f"{r['agent']['gate_us'] / 1000:+.2f} ms")
    row("  target: 2ms + ckpt", lambda b, r: f"{r['agent']['target_us'] / 1000:.2f} ms")
    row(
        "writes per step",
        lambda b, r: str(r["seq"]["store_calls_10_steps"].get("record_steps", 0) / 10),
    )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--quick", action="store_true", help="shorter runs, noisier figures")
    args = p.parse_args()
    floor = bench_floor.measure(1000 if args.quick else 3000, tuple(args.backends))
    results = {b: run_backend(b, args.quick) for b in args.backends}
    lines = report(floor, results)
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}.json"
    path.write_text(
        json.dumps(
            {"machine": platform.platform(), "floor": floor, "results": results, "table": lines},
            indent=2,
            default=str,
        )
    )
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
