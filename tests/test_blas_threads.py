"""numpy's BLAS runs with trainer.threads threads in a run."""
import json

import numpy as np  # noqa: F401  (loads the BLAS that threadpoolctl looks for)
from threadpoolctl import threadpool_info

from trpo_lab import workers


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_threads_are_limited_inside_and_restored_after():
    assert _blas_threads(), "numpy's BLAS is visible to threadpoolctl"
    with workers.blas_threads(3):  # whatever this machine's default
        with workers.blas_threads(1):
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {3}


def test_a_run_limits_blas_threads_while_it_trains(tmp_path, monkeypatch):
    """OpenBLAS defaults to a thread per core; during a run numpy uses trainer.threads, after it the default again."""
    import trpo_lab.collection as collection
    import trpo_lab.trainer as trainer
    from trpo_lab.config import Config, EnvConfig

    seen = {}
    real_collect = collection.collect

    def spy(venv, *args):
        seen["trainer"] = _blas_threads()
        return real_collect(venv, *args)

    monkeypatch.setattr(collection, "collect", spy)
    cfg = Config(env=EnvConfig(id="CartPole-v1"))
    cfg.trainer.total_steps = cfg.trainer.steps_per_iter = 256
    cfg.trainer.n_envs, cfg.trainer.vec_env, cfg.trainer.threads = 2, "subproc", 1
    cfg.trainer.eval_episodes, cfg.trainer.progress = 1, False
    cfg.logger.wandb.mode = "disabled"
    with workers.blas_threads(3):
        trainer.train(cfg, tmp_path / "run")
        assert set(_blas_threads()) == {3}
    assert seen["trainer"] and set(seen["trainer"]) == {1}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
