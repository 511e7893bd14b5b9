"""The page: sections in the order a reader asks "which settings work, and how sure are we",
and the command line."""
from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from trpo_lab import metrics as M
from trpo_lab.report import figures as F
from trpo_lab.report import references, stats
from trpo_lab.report.discovery import collect_inputs
from trpo_lab.report.grouping import Configuration, by_env, by_name, fmt, group_runs, score_matrices
from trpo_lab.report.studies import study_section
from trpo_lab.report.tables import final_return_html, final_return_rows, final_return_text, num, table
from trpo_lab.sweeper.secrets import mask_url

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0} figure{margin:1em 0} img{max-width:100%}
figcaption{font-size:13px;color:#444} .file{color:#888} .note{color:#a40} code,pre{background:#f6f6f6}
pre.overrides{padding:.5em;white-space:pre-wrap}
"""

# Once every figure has decoded, marks the page with what a headless browser can check:
# how many figures decoded, and which draw no data (none plotted, or a blank image).
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var figs = document.querySelectorAll('figure.report-figure');
  var loaded = 0, empty = [];
  figs.forEach(function (fig) {
    var im = fig.querySelector('img');
    if (!(im.complete && im.naturalWidth > 0)) { empty.push(fig.id); return; }
    loaded++;
    var c = document.createElement('canvas');
    c.width = im.naturalWidth; c.height = im.naturalHeight;
    var g = c.getContext('2d'); g.drawImage(im, 0, 0);
    var px = g.getImageData(0, 0, c.width, c.height).data, ink = 0;
    for (var i = 0; i < px.length; i += 4) { if (px[i] < 200 || px[i + 1] < 200 || px[i + 2] < 200) ink++; }
    if (parseInt(fig.dataset.points || '0') === 0 || ink < 0.005 * c.width * c.height) empty.push(fig.id);
  });
  document.body.setAttribute('data-figures-total', figs.length);
  document.body.setAttribute('data-figures-loaded', loaded);
  document.body.setAttribute('data-figures-empty', empty.join(' '));
});
"""


class ReportError(ValueError):
    """A request the report cannot answer (an unknown --versus name); the message says why."""


def _scales(configs: list[Configuration]) -> tuple[dict[str, float], list[str]]:
    """Per env, what its final returns are divided by for cross-task aggregates, and the sentences saying so."""
    scale, notes = {}, []
    for env_id, group in by_env(configs).items():
        value, what = references.normaliser(env_id)
        if value is None:
            scores = np.concatenate([c.scores for c in group]) if group else np.zeros(0)
            if not len(scores) or scores.max() <= 0:
                notes.append(f"{env_id}: left out (no reference score and no positive return to scale by)")
                continue
            value, what = float(scores.max()), f"the best final return in this report ({scores.max():.4g})"
        scale[env_id] = value
        notes.append(f"{env_id}: divided by {what}")
    return scale, notes


def _find(name: str, configs: list[Configuration]) -> str:
    for conf in configs:
        if name in (conf.name, conf.label):
            return conf.name
    known = ", ".join(f"{n} ({g[0].label})" for n, g in by_name(configs).items())
    raise ReportError(f"--versus {name!r} is not a configuration here; the configurations are {known}")


def aggregate_section(configs: list[Configuration], figures: F.Figures, versus: Optional[tuple[str, str]]) -> str:
    scale, scale_notes = _scales(configs)
    matrices, tasks, notes = score_matrices(configs, scale)
    parts = ["<h2 id='aggregates'>Aggregates across seeds and tasks (rliable)</h2>",
             "<p>Agarwal et al. 2021, \"Deep RL at the Edge of the Statistical Precipice\", with their "
             "library rliable: interquartile mean (IQM) and optimality gap of the final returns, "
             f"normalised per task, with stratified bootstrap 95% intervals ({stats.BOOTSTRAP_SAMPLES} "
             "resamples of the runs within each task); performance profiles (the fraction of runs above each "
             "normalised score). Normalisation: " + html.escape("; ".join(scale_notes)) + ".</p>"]
    if notes:
        parts.append("<p class='note'>" + html.escape("; ".join(notes)) + ".</p>")
    if not matrices:
        parts.append("<p class='note'>No configuration has final returns on every task: nothing to aggregate.</p>")
        return "\n".join(parts)
    wanted = [_find(v, configs) for v in versus] if versus else []
    if len(matrices) > F.MAX_CURVES:  # rliable's bootstrap costs about a second per configuration
        best = sorted(matrices, key=lambda n: -stats.iqm(matrices[n]))[:F.MAX_CURVES]
        parts.append(f"<p class='note'>Only the {F.MAX_CURVES} configurations with the highest IQM (of "
                     f"{len(matrices)}) are aggregated.</p>")
        matrices = {n: m for n, m in matrices.items() if n in best or n in wanted}
    palette = F.colours(configs)
    results = stats.aggregates(matrices)
    parts.append(F.aggregate_figure(results, palette, figures,
                                    f"IQM and optimality gap (mean shortfall below 1) of normalised final "
                                    f"returns over {len(tasks)} task(s): point estimate (black) and 95% "
                                    "stratified bootstrap interval (bar)."))
    rows = [[name, str(matrices[name].shape[0]), *(f"{num(v[0])} [{num(v[1])}, {num(v[2])}]"
                                                    for v in (results[name]["IQM"], results[name]["optimality gap"]))]
            for name in results]
    parts.append(table(["configuration", "runs per task", "IQM [95% CI]", "optimality gap [95% CI]"], rows))
    top = max(1.0, max(float(m.max()) for m in matrices.values()))
    taus = np.linspace(0.0, top * 1.05, 61)
    profiles, cis = stats.performance_profiles(matrices, taus)
    parts.append(F.profile_figure(taus, profiles, cis, palette, figures,
                                  "Performance profiles: the fraction of runs (all tasks) whose normalised "
                                  "final return exceeds tau, with 95% stratified bootstrap bands."))
    if versus:
        a, b = wanted
        if a not in matrices or b not in matrices:
            raise ReportError(f"--versus {a} {b}: both need final returns on every task ({', '.join(tasks)})")
        value, low, high = stats.probability_of_improvement(matrices[a], matrices[b])
        verdict = f"{a} is better" if low > 0.5 else f"{a} is worse" if high < 0.5 else "not distinguishable at 95%"
        parts.append(f"<h3 id='versus'>{a} versus {b}</h3><p>P({a} &gt; {b}) = {num(value)}, 95% CI "
                     f"[{num(low)}, {num(high)}]: {verdict}.</p>")
        parts.append(F.versus_figure(a, b, value, low, high, figures))
    return "\n".join(parts)


def configuration_table(configs: list[Configuration], varying: list[str]) -> str:
    rows = []
    for name, group in by_name(configs).items():
        settings = group[0].settings
        seeds = ", ".join(f"{c.env_id}: {len(c.completed)}/{len(c.runs)}" for c in group)
        rows.append([name] + [fmt(settings.get(k)) for k in varying] + [seeds])
    return table(["configuration", *varying, "completed / runs per env"], rows)


def staleness_section(runs: list, figures: F.Figures) -> list[str]:
    """Final return against policy lag per correction, and the staleness metrics over training,
    for runs that vary the lag, the correction or the collection (staleness.py)."""
    from trpo_lab.report import staleness

    if not staleness.is_staleness_study(runs):
        return []
    found = staleness.cells(runs)
    if not found:
        return []
    caption = ("Final evaluation return against the behaviour policy's lag, one line per off-policy "
               "correction: IQM over seeds with a 95% bootstrap band; asynchronous runs at their measured "
               "mean lag (docs/off_policy.md).")
    diagnostics = ("The staleness of each batch over training (mean over seeds): the lag of its samples, "
                   "the KL from the behaviour policy to pi_old, and the effective sample size and largest "
                   "value of the importance weights pi_old / beta.")
    return ["<h2 id='staleness'>Staleness</h2>", figures.add(staleness.figure(found), "fig-staleness", caption),
            "<pre>" + html.escape(staleness.table_markdown(found)) + "</pre>",
            figures.add(staleness.diagnostics_figure(found), "fig-staleness-diagnostics", diagnostics)]


def build_report(paths: list[str], out: Path, title: Optional[str] = None, png: bool = False,
                 table_style: Optional[str] = None, versus: Optional[tuple[str, str]] = None) -> dict[str, Any]:
    """Write the page to `out` (with `png`, every figure also in `<out stem>_files/`; with
    `table_style`, the final-return table in `<out stem>_final_returns.md|.tex`); returns what it
    holds. Writes nothing when no input is usable (`written` False)."""
    inputs = collect_inputs(paths)
    result: dict[str, Any] = {"runs": len(inputs.runs), "configurations": 0, "studies": len(inputs.studies),
                              "figures": [], "skipped": inputs.skipped, "written": False, "table": None}
    if not inputs.runs and not inputs.studies:
        return result
    figures = F.Figures(out.with_name(out.stem + "_files") if png else None)
    configs, common, varying = group_runs(inputs.runs)
    for name in versus or ():
        _find(name, configs)  # an unknown name fails before anything is drawn
    body: list[str] = []
    title = title or "trpo_lab report: " + ", ".join(mask_url(p) for p in paths)  # no storage password
    body.append(f"<h1>{html.escape(title)}</h1>")
    n_settings = len(by_name(configs))
    body.append(f"<p>{len(inputs.runs)} run(s) in {len(configs)} configuration(s) ({n_settings} setting(s) "
                f"on {len(by_env(configs))} environment(s)); {len(inputs.studies)} study(ies); "
                f"{len(inputs.skipped)} input(s) skipped.</p>")
    if configs:
        body.append("<h2 id='configurations'>Configurations</h2>")
        body.append("<p>Runs that agree on every setting but the seed (and bookkeeping: where, how and in which "
                    "trial they ran) are seeds of one configuration. The settings that differ:</p>")
        body.append(configuration_table(configs, varying))
    if common:
        shown = {k: v for k, v in common.items() if k.startswith(("trpo.", "network.", "trainer.", "env."))}
        body.append("<details><summary>Settings shared by every run</summary><pre>"
                    + html.escape("\n".join(f"{k}={fmt(v)}" for k, v in sorted(shown.items())))
                    + "</pre></details>")
    rows = final_return_rows(configs)
    if configs:
        body.append("<h2 id='learning-curves'>Learning curves</h2>")
        fig = F.learning_curves(configs, figures, M.EP_RETURN, "fig-learning-curves", "training episode return",
                                "Training return (stochastic policy, mean of the last 100 episodes) against "
                                "environment steps: mean over completed seeds, 95% bootstrap band; grey: "
                                "published TRPO scores where the task has them.")
        body.append(fig or "<p class='note'>No completed run has training returns to plot.</p>")
        fig = F.learning_curves(configs, figures, M.EVAL_RETURN, "fig-eval-curves", "evaluation return",
                                "Deterministic evaluation return (periodic, and the final one) against "
                                "environment steps: mean over seeds, 95% bootstrap band; diamonds: the final "
                                "evaluation's IQM over seeds with its 95% interval.", final_points=True)
        body.append(fig or "<p class='note'>No completed run has an evaluation to plot.</p>")
        body.append("<h2 id='final-returns'>Final returns</h2>")
        body.append("<p>Score of a run: <code>eval_return</code> in its summary.json (the deterministic policy "
                    "at the end of training, also the last row of metrics.jsonl). IQM: mean of the middle 50% of "
                    "the seeds' scores (all of them below 4 seeds); interval: rliable's percentile bootstrap over "
                    f"seeds, {stats.BOOTSTRAP_SAMPLES} resamples. Best configuration first, per environment.</p>")
        body.append(final_return_html(rows))
        body.append(F.final_returns(rows, configs, figures) or "")
        body.append(aggregate_section(configs, figures, versus))
    for i, study in enumerate(inputs.studies):
        if i == 0:
            body.append("<h2 id='studies'>Studies</h2>")
        try:
            body.append(study_section(study, i, figures))
        except Exception as err:
            inputs.skipped.append((f"study {study.study_name}", f"could not be drawn: {type(err).__name__}: {err}"))
    body.extend(staleness_section(inputs.runs, figures))
    if configs:
        body.append("<h2 id='throughput'>Speed</h2>")
        body.append(F.throughput_figure(configs, figures) or "<p class='note'>No timings to plot.</p>")
        body.append("<h2 id='trust-region'>Trust-region diagnostics</h2>")
        body.append(F.trust_region_figure(configs, figures) or "<p class='note'>No diagnostics to plot.</p>")
        body.append("<h2 id='runs'>Runs</h2>")
        run_rows = []
        for conf in configs:
            for r in conf.runs:
                s = r.summary
                run_rows.append([str(r.path), r.env_id, conf.name, fmt(r.seed), r.status,
                                 num(s.get(M.Summary.ENV_STEPS) if s else r.rows[-1][M.ENV_STEPS]),
                                 num(s.get(M.Summary.EVAL_RETURN)), num(s.get(M.Summary.EVAL_RETURN_STD)),
                                 num(s.get(M.Summary.BEST_EVAL_RETURN)), num(s.get(M.Summary.STEPS_PER_S)),
                                 num(s.get(M.Summary.WALL_TIME)), s.get(M.Summary.ERROR, "")])
        body.append(table(["run", "env", "configuration", "seed", "status", "env steps", "eval return",
                           "eval std", "best eval", "steps/s", "wall s", "error"], run_rows))
    body.append("<h2 id='skipped'>Skipped inputs</h2>")
    body.append(table(["input", "why"], [[p, why] for p, why in inputs.skipped]) if inputs.skipped
                else "<p>None.</p>")
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    if table_style and rows:
        text = final_return_text(rows, table_style)
        path = out.with_name(f"{out.stem}_final_returns.{'md' if table_style == 'md' else 'tex'}")
        path.write_text(text)
        result["table"] = (path, text)
    result.update(configurations=len(configs), figures=[fig_id for fig_id, _, _ in figures.items],
                  figure_points={fig_id: n for fig_id, _, n in figures.items}, written=True,
                  groups=[(c.env_id, c.name, c.label, len(c.scores)) for c in configs])
    return result


def main(argv: Optional[list[str]] = None) -> int:
    import trpo_lab.report as package

    parser = argparse.ArgumentParser(prog="python -m trpo_lab.report",
                                     description=(package.__doc__ or "").split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="run directory, multirun directory, Optuna journal/SQLite file or RDB URL")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="HTML file to write (default: report.html in the only directory given, "
                             "else in the current directory)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--png", action="store_true",
                        help="also write every figure as a PNG (200 dpi) in <output stem>_files/, for papers")
    parser.add_argument("--table", choices=("md", "latex"), default=None,
                        help="also write the final-return table as markdown or LaTeX beside the page, and print it")
    parser.add_argument("--versus", nargs=2, metavar=("A", "B"), default=None,
                        help="probability of improvement of configuration A over B (names such as C1, or labels)")
    args = parser.parse_args(argv)
    out = args.output
    if out is None:
        dirs = [Path(p) for p in args.paths if Path(p).is_dir()]
        out = (dirs[0] if len(args.paths) == 1 and dirs else Path(".")) / "report.html"
    try:
        result = build_report(args.paths, out, args.title, png=args.png, table_style=args.table,
                              versus=tuple(args.versus) if args.versus else None)
    except ReportError as err:
        print(f"trpo_lab.report: error: {err}", file=sys.stderr)
        return 2
    for path, why in result["skipped"]:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if not result["written"]:
        print(f"trpo_lab.report: error: nothing to report (no run directory or study among "
              f"{' '.join(mask_url(p) for p in args.paths)}); wrote nothing", file=sys.stderr)
        return 1
    if result["table"]:
        path, text = result["table"]
        print(text, end="")
        print(f"wrote {path}")
    print(f"wrote {out} ({result['runs']} runs, {result['configurations']} configurations, "
          f"{result['studies']} studies, {len(result['figures'])} figures"
          + (f", PNGs in {out.with_name(out.stem + '_files')}" if args.png else "") + ")")
    return 0
