"""Where a run's numbers go: metrics.jsonl, summary.json, wandb and the progress bar.

Only the trainer talks to `RunLogger`; the TRPO update returns stats and never logs.
The local files are written first and never depend on wandb: a missing or
crashing wandb costs the wandb copy, not the metrics.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional

from trpo_lab import metrics as M
from trpo_lab.config import Config, WandbConfig, flat_config, is_bookkeeping

log = logging.getLogger(__name__)


def setting_overrides(overrides: list[str]) -> list[str]:
    """The `key=value` overrides that define a configuration beside the environment:
    everything but the env choice and the bookkeeping keys (config.BOOKKEEPING)."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key not in ("env", "env.id") and not is_bookkeeping(key):
            out.append(item)
    return out


def run_identity(cfg: Config) -> tuple[Optional[str], str]:
    """(wandb group, wandb name) of this run, unless the config names them.

    Group: the jobs of one multirun or sweep share one, the sweep directory's
    name, so wandb's grouped view shows their mean and spread. Name: the
    environment, the overridden settings (the swept values) and the seed, e.g.
    `Hopper-v5 delta=0.02 gae_lambda=0.9 seed=1`.
    """
    group, overrides = None, []
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            overrides = list(hc.overrides.task)
            if hc.mode == RunMode.MULTIRUN:
                group = Path(hc.sweep.dir).name
                swept = _swept_keys(Path(hc.sweep.dir), hc.sweeper.get("params"))
                if swept:
                    overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    except Exception:  # outside Hydra (tests, notebooks): no group, name from the config
        pass
    parts = [cfg.env.id]
    for item in setting_overrides(overrides):
        key, _, value = item.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    parts.append(f"seed={cfg.trainer.seed}")
    w = cfg.logger.wandb
    return w.group or group, w.name or " ".join(parts)


_SWEEP_SYNTAX = (",", "choice(", "range(", "interval(", "glob(", "tag(")


def _swept_keys(sweep_dir: Path, sweeper_params: Any) -> set[str]:
    """Keys a multirun varies: sweep expressions on its command line (multirun.yaml)
    and the sweeper's `params` (the Optuna search space)."""
    from omegaconf import OmegaConf

    keys = set(sweeper_params or {})
    launch = sweep_dir / "multirun.yaml"
    if launch.is_file():
        for item in OmegaConf.load(launch).hydra.overrides.task:
            key, _, value = item.partition("=")
            if any(mark in value for mark in _SWEEP_SYNTAX):
                keys.add(key.lstrip("+~"))
    return keys


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing value reads as null
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump({k: _jsonable(v) for k, v in data.items()}, f, indent=2)
            f.write("\n")
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep a half-written copy
        raise
    os.replace(tmp, path)


def failed_summary(env_id: str, error: str) -> dict[str, Any]:
    """summary.json of a run that failed before its first iteration: every field, nothing measured."""
    nan = float("nan")
    summary: dict[str, Any] = {k: nan for k in M.SUMMARY_FIELDS}
    summary.update({M.Summary.ENV_ID: env_id, M.Summary.ENV_STEPS: 0, M.Summary.ITERATIONS: 0,
                    M.Summary.WALL_TIME: 0.0, M.Summary.STEPS_PER_S: 0.0, M.Summary.STATUS: M.Status.FAILED,
                    M.Summary.ERROR: error})
    return summary


class WandbRun:
    """One wandb run for one job; every failure inside wandb is reported once and swallowed."""

    def __init__(self, cfg: WandbConfig, run_dir: Path, config: dict[str, Any], name: str,
                 group: Optional[str] = None, resumed: bool = False):
        self.run = None
        if cfg.mode == "disabled":
            return
        try:
            import wandb

            # A resumed run continues its wandb run online; offline runs cannot be
            # resumed by wandb, so the continuation is a second run tagged "resumed".
            id_file = run_dir / "wandb_run_id"
            run_id = id_file.read_text().strip() if id_file.is_file() and cfg.mode == "online" else None
            tags = list(cfg.tags) + (["resumed"] if resumed and run_id is None else [])

            def start(mode: str):
                return wandb.init(
                    project=cfg.project, entity=cfg.entity, group=group, tags=tags,
                    name=name, mode=mode, dir=str(run_dir), config=config,
                    id=run_id if mode == "online" else None, resume="allow" if run_id and mode == "online" else None,
                    reinit="finish_previous",
                )

            try:
                self.run = start(cfg.mode)
            except Exception as err:
                if cfg.mode != "online":
                    raise
                # No account or no network: keep the run offline, so it can be synced later.
                log.warning("wandb could not start online (%s); logging offline in %s instead: "
                            "sync it later with `wandb sync %s`", " ".join(str(err).split()),
                            run_dir / "wandb", run_dir / "wandb" / "offline-run-*")
                self.run = start("offline")
            id_file.write_text(self.run.id + "\n")
            self.run.define_metric(M.ENV_STEPS)
            self.run.define_metric("*", step_metric=M.ENV_STEPS)
            # Run-table columns beyond the last value: the best evaluation and the typical KL.
            self.run.define_metric(M.EVAL_RETURN, step_metric=M.ENV_STEPS, summary="max,last")
            self.run.define_metric(M.KL, step_metric=M.ENV_STEPS, summary="mean,max")
            self.run.define_metric(M.LINE_SEARCH_STEPS, step_metric=M.ENV_STEPS, summary="mean")
        except Exception as err:  # wandb must never take the local results down with it
            self._fail("start", err)

    def _fail(self, what: str, err: Exception) -> None:
        log.warning("wandb could not %s (%s); local metrics.jsonl and summary.json are unaffected", what, err)
        self.run = None

    def log(self, row: dict[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.log(row)
            except Exception as err:
                self._fail("log", err)

    def finish(self, summary: dict[str, Any], failed: bool) -> None:
        if self.run is not None:
            try:
                self.run.summary.update({k: _jsonable(v) for k, v in summary.items()})
                self.run.finish(exit_code=1 if failed else 0)
            except Exception as err:
                self._fail("finish", err)


class ProgressBar:
    """A tqdm bar on an interactive terminal; silent in logs and pipes."""

    def __init__(self, total: int, enabled: bool, initial: int = 0):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)

    def update(self, env_steps: int, row: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.update(env_steps - self.bar.n)
        ret = row.get(M.EP_RETURN)
        self.bar.set_postfix({"steps/s": f"{row[M.STEPS_PER_S]:.0f}",
                              "return": "-" if ret is None or not math.isfinite(ret) else f"{ret:.1f}"},
                             refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunLogger:
    """metrics.jsonl (one row per iteration), wandb, the progress bar, and summary.json."""

    def __init__(self, cfg: Config, run_dir: Path, total_steps: int, run_name: str, initial_steps: int = 0):
        self.run_dir = run_dir
        self.metrics_file = open(run_dir / "metrics.jsonl", "a")
        group, name = run_identity(cfg)
        self.wandb = WandbRun(cfg.logger.wandb, run_dir, flat_config(cfg), name or run_name, group,
                              resumed=initial_steps > 0)
        self.progress = ProgressBar(total_steps, cfg.trainer.progress, initial_steps)

    def _check_metrics_file(self) -> None:
        """Raise FileNotFoundError when metrics.jsonl was deleted or replaced while the run wrote it:
        the rows before would be lost without a word, so the run fails (summary.json says why)."""
        path = self.run_dir / "metrics.jsonl"
        try:
            same = os.path.samestat(os.fstat(self.metrics_file.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            raise FileNotFoundError(f"{path} was deleted or replaced during the run, so its earlier rows are lost; "
                                    "the checkpoints are kept (trainer.resume continues from the last one)")

    def log(self, row: dict[str, Any]) -> None:
        self._check_metrics_file()
        self.metrics_file.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
        self.metrics_file.flush()
        self.wandb.log(row)
        self.progress.update(row[M.ENV_STEPS], row)

    def finish(self, summary: dict[str, Any]) -> None:
        self.progress.close()
        try:
            self.metrics_file.close()
        except OSError as err:  # e.g. a full disk: still try to record how the run ended
            log.error("could not finish writing metrics.jsonl: %s", err)
        write_json_atomic(self.run_dir / "summary.json", summary)
        self.wandb.finish(summary, failed=summary[M.Summary.STATUS] in (M.Status.FAILED, M.Status.INTERRUPTED))
