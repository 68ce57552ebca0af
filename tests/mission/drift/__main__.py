"""Run the drift suite and print its figures: `python -m tests.mission.drift [--runs] [-k RE]`.

python -m tests.mission.drift              # every scenario, the figures
python -m tests.mission.drift --runs       # and one line per run
python -m tests.mission.drift -k sales     # the scenarios whose id matches
python -m tests.mission.drift --json out.json
python -m tests.mission.drift --intent semantic   # the embedding measure (tether[semantic])
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from tests.mission.drift import suite
from tether.mission.monitors.intent import MEASURES


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(figures: dict[str, Any]) -> str:
    """The figures as plain-text tables."""
    f = figures
    lines = [
        f"runs {f['runs']} (drifted {f['drifted']}, healthy {f['healthy']}), "
        f"{f['seconds']:.1f} s in all",
        "",
        f"{'overall precision':<38}{_pct(f['precision'])}",
        f"{'overall recall':<38}{_pct(f['recall'])}",
        f"{'detection delay, turns (mean/median/max)':<38}"
        f"{_num(f['delay_mean'])} / {_num(f['delay_median'])} / {f['delay_max']}",
        f"{'correction success (closed, verified)':<38}{_pct(f['correction_success'])}",
        f"{'  without forbidden-tool runs':<38}{_pct(f['correction_success_without_forbidden'])}",
        f"{'extra steps when corrected (mean/med)':<38}"
        f"{_num(f['extra_steps_mean'])} / {_num(f['extra_steps_median'])}",
        f"{'healthy runs flagged':<38}{f['healthy_flagged']} of {f['healthy']}",
        f"{'healthy runs halted':<38}{f['healthy_halted']} of {f['healthy']}",
        f"{'healthy runs closed, verified':<38}{f['healthy_closed']} of {f['healthy']}",
        f"{'failed workflows':<38}{f['failed_runs']}",
        "",
        f"{'drift kind':<18}{'runs':>5}{'recall':>8}{'delay':>7}{'max':>5}"
        f"{'corrected':>11}{'halted':>8}{'extra':>7}  first signal",
    ]
    for kind, d in f["by_drift"].items():
        first = ", ".join(f"{k} {n}" for k, n in d["first_signal"].items())
        lines.append(
            f"{kind:<18}{d['runs']:>5}{_pct(d['recall']):>8}{_num(d['delay_mean']):>7}"
            f"{d['delay_max'] if d['delay_max'] is not None else '-':>5}"
            f"{_pct(d['corrected']):>11}{d['halted']:>8}{_num(d['extra_steps_mean']):>7}  {first}"
        )
    lines += ["", f"{'signal kind':<18}{'runs fired':>11}{'in healthy':>12}{'precision':>11}"]
    for kind, d in f["by_signal"].items():
        lines.append(f"{kind:<18}{d['fired']:>11}{d['in_healthy']:>12}{_pct(d['precision']):>11}")
    lines += ["", "runs of each drift kind where a signal kind fired at or after the drift's start"]
    lines.append(f"{'signal kind':<18}" + "".join(f"{k[:12]:>13}" for k in suite.DRIFT_KINDS))
    for kind, d in f["by_signal"].items():
        cells = "".join(f"{_pct(d['recall_by_drift'][k]):>13}" for k in suite.DRIFT_KINDS)
        lines.append(f"{kind:<18}{cells}")
    return "\n".join(lines)


def run_lines(runs: list[suite.Run]) -> str:
    """One line per run: what it was, how it ended, what fired first."""
    out = []
    for r in runs:
        sc = r.scenario
        what = sc.drift or "healthy"
        first = r.actionable[0] if r.actionable else None
        fired = f"{first.kind}/{first.rule}@{first.turn}->{first.action}" if first else "-"
        out.append(
            f"{sc.id:<44}{what:<17}{'' if sc.start is None else sc.start:>3} "
            f"{r.state:<8}{'ok' if r.verified else '--':<3}{r.steps:>4} {fired}"
            + (f"  [{r.reason[:80]}]" if r.state == "failed" else "")
        )
    return "\n".join(out)


def embedding_cost() -> str:
    """What the semantic measure cost in this process: model load and embeddings."""
    from tether.mission import semantic

    e = semantic.embedder()
    per = 1000 * e.seconds / e.embedded if e.embedded else 0.0
    return (
        f"\nsemantic measure: model loaded in {e.load_seconds:.1f} s; {e.embedded} texts embedded "
        f"in {e.seconds:.1f} s ({per:.1f} ms each), {e.lookups - e.embedded} of {e.lookups} "
        "lookups served from the cache"
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run the suite, print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(prog="python -m tests.mission.drift")
    parser.add_argument("-k", dest="pattern", help="only scenarios whose id matches this regex")
    parser.add_argument("--runs", action="store_true", help="print one line per run")
    parser.add_argument("--json", type=Path, help="write the figures and runs as JSON here")
    parser.add_argument(
        "--intent",
        choices=MEASURES,
        default="lexical",
        help="the intent monitor's measure (semantic needs the tether[semantic] extra)",
    )
    args = parser.parse_args(argv)
    print(f"intent measure: {args.intent}")
    runs = asyncio.run(suite.run_all(suite.load(), pattern=args.pattern, intent=args.intent))
    figures = suite.measure(runs)
    if args.runs:
        print(run_lines(runs), end="\n\n")
    print(table(figures))
    if args.intent == "semantic":
        print(embedding_cost())
    if args.json:
        detail = [
            {
                "id": r.scenario.id,
                "drift": r.scenario.drift,
                "start": r.scenario.start,
                "state": r.state,
                "verified": r.verified,
                "steps": r.steps,
                "signals": [vars(x) for x in r.fired],
            }
            for r in runs
        ]
        args.json.write_text(json.dumps({"figures": figures, "runs": detail}, indent=1))


if __name__ == "__main__":
    main()
