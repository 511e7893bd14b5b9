"""An offline wandb run holds the config, the metrics against env_steps, and the exit state."""
import json
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

from trpo_lab import metrics as M
from trpo_lab.config import Config, EnvConfig, LoggerConfig, TrainerConfig, WandbConfig
from trpo_lab.trainer import train

_BLOCK = 32 * 1024


def read_wandb_records(path: Path) -> list[pb.Record]:
    """Records of a .wandb file (a LevelDB-style log: 7-byte file header, 32 KiB blocks)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # block trailer too short for a header
            pos += _BLOCK - pos % _BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # full record
            records.append(chunk)
        elif kind == 2:  # first fragment
            pending = chunk
        elif kind == 3:  # middle fragment
            pending += chunk
        elif kind == 4:  # last fragment
            records.append(pending + chunk)
    parsed = []
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        parsed.append(rec)
    return parsed


def read_finished_run(log_file: Path, timeout: float = 30.0) -> list[pb.Record]:
    """The records once wandb's service has written the exit record (it flushes asynchronously)."""
    deadline = time.time() + timeout
    while True:
        records = read_wandb_records(log_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.2)


def _items(items) -> dict:
    """wandb stores 'a/b' keys as nested_key ['a/b'] and plain keys in key."""
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def test_offline_run_files_hold_config_and_metrics(tmp_path):
    cfg = Config(
        env=EnvConfig(id="CartPole-v1"),
        trainer=TrainerConfig(total_steps=1536, steps_per_iter=512, eval_every=2, eval_episodes=2, progress=False),
        logger=LoggerConfig(wandb=WandbConfig(mode="offline", group="unit-group", tags=["t1", "t2"])),
    )
    train(cfg, tmp_path)
    [log_file] = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    records = read_finished_run(log_file)

    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_group == "unit-group"
    assert list(run.tags) == ["t1", "t2"]
    config = _items(run.config.update)
    assert config["trpo.delta"] == 0.01 and config["env.id"] == "CartPole-v1"

    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    local = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == len(local) == 3
    assert [h[M.ENV_STEPS] for h in history] == [512, 1024, 1536]
    assert history[1][M.EVAL_RETURN] == local[1][M.EVAL_RETURN]
    assert history[0][M.KL] == local[0][M.KL]

    exits = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exits and exits[-1].exit_code == 0
    summaries = [r.summary for r in records if r.WhichOneof("record_type") == "summary"]
    final = {k: v for s in summaries for k, v in _items(s.update).items()}
    assert final["status"] == "completed"


def _exit_codes(run_dir: Path) -> list[int]:
    return [r.exit.exit_code
            for log_file in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
            for r in read_finished_run(log_file) if r.WhichOneof("record_type") == "exit"]


def test_two_jobs_in_one_process_get_their_own_runs_and_a_failure_is_marked(tmp_path):
    import pytest

    from trpo_lab.trainer import DivergedError

    def cfg(env_id):
        return Config(env=EnvConfig(id=env_id),
                      trainer=TrainerConfig(total_steps=1024, steps_per_iter=512, n_envs=1, eval_episodes=1,
                                            progress=False),
                      logger=LoggerConfig(wandb=WandbConfig(mode="offline")))

    train(cfg("CartPole-v1"), tmp_path / "ok")
    with pytest.raises(DivergedError):
        train(cfg("nan_env:NaNReward-v0"), tmp_path / "bad")
    ok_runs = list((tmp_path / "ok" / "wandb").glob("offline-run-*"))
    bad_runs = list((tmp_path / "bad" / "wandb").glob("offline-run-*"))
    assert len(ok_runs) == len(bad_runs) == 1 and ok_runs[0].name != bad_runs[0].name
    assert _exit_codes(tmp_path / "ok") == [0]
    assert _exit_codes(tmp_path / "bad") == [1]
