"""Tables: the final returns per configuration (HTML, markdown, LaTeX) and the HTML helpers."""
from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from trpo_lab import metrics as M
from trpo_lab.report import stats
from trpo_lab.report.grouping import Configuration, by_env


def num(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "" if x is None else str(x)
    return "-" if not math.isfinite(v) else f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def final_return_rows(configs: list[Configuration]) -> list[dict[str, Any]]:
    """Per env, best IQM first: name, settings, seeds scored, IQM with its 95% interval, median,
    mean, std, min, max and the per-seed values of the final evaluation returns, and the runs
    left out with their status."""
    rows = []
    for env_id, group in by_env(configs).items():
        env_rows = []
        for conf in group:
            scores = conf.scores
            left = [r.status for r in conf.runs if r.status != M.Status.COMPLETED]
            left += ["no final evaluation"] * (len(conf.completed) - len(scores))
            row = {"env": env_id, "name": conf.name, "label": conf.label, "n": len(scores),
                   "iqm": float("nan"), "low": float("nan"), "high": float("nan"), "mean": float("nan"),
                   "median": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"),
                   "per_seed": per_seed(conf), "left_out": left}
            if len(scores):
                low, high = stats.bootstrap_interval(scores)
                row.update(iqm=stats.iqm(scores), low=low, high=high, median=float(np.median(scores)),
                           mean=float(scores.mean()),
                           std=float(scores.std()), min=float(scores.min()), max=float(scores.max()))
            env_rows.append(row)
        env_rows.sort(key=lambda r: -r["iqm"] if math.isfinite(r["iqm"]) else math.inf)
        for rank, row in enumerate(env_rows, 1):
            row["rank"] = rank
        rows.extend(env_rows)
    return rows


def per_seed(conf: Configuration) -> str:
    """The completed seeds' final returns in seed order, "seed: return" joined by commas."""
    scored = [(r.seed, r.final_return) for r in conf.completed if math.isfinite(r.final_return)]
    return ", ".join(f"{'?' if seed is None else seed}: {value:.0f}" for seed, value in scored)


def final_return_html(rows: list[dict[str, Any]]) -> str:
    body = [[r["env"], str(r["rank"]), r["name"], r["label"], str(r["n"]), num(r["iqm"]),
             f"[{num(r['low'])}, {num(r['high'])}]", num(r["median"]), num(r["mean"]), num(r["std"]), num(r["min"]),
             num(r["max"]), r["per_seed"], f"{len(r['left_out'])} ({', '.join(r['left_out'])})" if r["left_out"] else "0"] for r in rows]
    return table(["env", "rank", "configuration", "settings", "seeds", "IQM", "95% CI", "median", "mean", "std",
                  "min", "max", "per seed", "left out (status)"], body)


def final_return_text(rows: list[dict[str, Any]], style: str) -> str:
    """The final-return table for a paper: style "md" (markdown) or "latex" (booktabs)."""
    header = ["env", "configuration", "settings", "seeds", "IQM", "95% CI", "median", "mean", "std", "per seed"]
    cells = [[r["env"], r["name"], r["label"] or "-", str(r["n"]), num(r["iqm"]),
              f"[{num(r['low'])}, {num(r['high'])}]", num(r["median"]), num(r["mean"]), num(r["std"]),
              r["per_seed"] or "-"] for r in rows]
    if style == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines) + "\n"

    escapes = {"\\": "\\textbackslash{}", "_": "\\_", "%": "\\%", "&": "\\&", "#": "\\#", "$": "\\$",
               "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}

    def tex(text: str) -> str:
        return "".join(escapes.get(ch, ch) for ch in text)

    lines = ["\\begin{tabular}{lllrrlrrrl}", "\\toprule", " & ".join(header) + " \\\\", "\\midrule"]
    lines += [" & ".join(tex(c) for c in row) + " \\\\" for row in cells]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
