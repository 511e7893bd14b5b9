"""`python -m trpo_lab.report.study_table JOURNAL`: a study's trials as a markdown table, ranked by
the mean of their late evaluations, with the evidence for choosing a budget and the parameters'
importances. docs/results.md prints its tables with it.

- **Ranking:** a trial's *late mean* is the mean of the evaluations it reported to the pruner from
  `--late-from` steps on (its final evaluation included): less noisy than one final evaluation,
  and the rule that picks a preset (docs/results.md, Protocol).
- **Does a shorter budget rank as the full one?** Spearman's rank correlation, over the complete
  trials, between the evaluation each reported at a step count and its late mean. Pruning from a
  step is sound where that correlation is high.
- **Importances:** Optuna's default importance evaluator over the complete trials' final values.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Optional, Sequence

from trpo_lab.report.discovery import load_studies


def late_mean(intermediate: dict[int, float], late_from: int, final: Optional[float] = None) -> Optional[float]:
    """The mean of the evaluations from `late_from` steps on and of the final one (`final`, which a
    trial reports as its value, not as an intermediate value)."""
    late = [v for step, v in intermediate.items() if step >= late_from and math.isfinite(v)]
    late += [final] if final is not None and math.isfinite(final) else []
    return sum(late) / len(late) if late else None


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or len(a) < 3:
        raise ValueError("Spearman's correlation needs two equally long series of 3 or more")
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var > 0 else float("nan")


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(study: Any, late_from: int) -> str:
    from optuna.trial import TrialState

    rows = []
    for t in study.trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        steps = max(t.intermediate_values) if t.intermediate_values else 0
        final = t.value if t.state == TrialState.COMPLETE else None
        rows.append((t, steps, final, late_mean(t.intermediate_values, late_from, final)))
    # Complete trials by late mean first, then the pruned ones by the step they reached.
    rows.sort(key=lambda r: (r[0].state != TrialState.COMPLETE, -(r[3] if r[3] is not None else -math.inf),
                             -r[1]))
    names = sorted({k for r in rows for k in r[0].params})
    head = ["trial", "state", "last evaluation at", "final", f"late mean (from {late_from:,})"] + names
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, steps, final, late in rows:
        cells = [str(t.number), t.state.name.lower(), f"{steps:,}",
                 "" if final is None else f"{final:,.0f}", "" if late is None else f"{late:,.0f}"]
        cells += [_short(t.params.get(k, "")) for k in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranking_by_budget(study: Any, late_from: int) -> str:
    from optuna.trial import TrialState

    done = [t for t in study.trials if t.state == TrialState.COMPLETE and t.intermediate_values]
    late = {t.number: late_mean(t.intermediate_values, late_from, t.value) for t in done}
    done = [t for t in done if late[t.number] is not None]
    if len(done) < 3:
        return f"Rank correlation needs 3 or more complete trials ({len(done)} so far)."
    steps = sorted(set.intersection(*(set(t.intermediate_values) for t in done)))
    lines = ["| evaluation at step | Spearman with the late mean |", "|---|---|"]
    for s in steps:
        if s >= late_from:
            break
        rho = spearman([t.intermediate_values[s] for t in done], [late[t.number] for t in done])
        lines.append(f"| {s:,} | {rho:.2f} |")
    return f"Over {len(done)} complete trials:\n\n" + "\n".join(lines)


def importances(study: Any) -> str:
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if len(done) < 3:
        return f"Importances need 3 or more complete trials ({len(done)} so far)."
    imp = optuna.importance.get_param_importances(study)
    return (f"Importances of the final evaluation over {len(done)} complete trials (Optuna's default evaluator): "
            + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trpo_lab.report.study_table", description=__doc__.split("\n")[0])
    parser.add_argument("journal", help="an Optuna journal file (or SQLite file / RDB URL)")
    parser.add_argument("--study", help="the study's name (default: the only one, or every one)")
    parser.add_argument("--late-from", type=int, default=700_000,
                        help="the late mean averages evaluations from this step on (default 700000)")
    args = parser.parse_args(argv)
    url = args.journal if "://" in args.journal or args.journal.startswith("journal:") else f"journal:{args.journal}"
    studies = [s for s in load_studies(url) if args.study in (None, s.study_name)]
    if not studies:
        print(f"no study {args.study!r} in {args.journal}", file=sys.stderr)
        return 2
    for study in studies:
        states: dict[str, int] = {}
        for t in study.trials:
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        print(f"## {study.study_name}: {len(study.trials)} trials "
              f"({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})\n")
        print(trials_table(study, args.late_from) + "\n")
        print(ranking_by_budget(study, args.late_from) + "\n")
        print(importances(study) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
