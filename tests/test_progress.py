"""The progress bar shows on a terminal and stays out of pipes and log files."""
import os
import pty
import subprocess
import sys
import time

from conftest import cli_env


def _run_in_pty(args, cwd, timeout=120) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "trpo_lab", *args], cwd=cwd, env=cli_env(),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout
    while time.time() < deadline:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=10)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_bar_on_terminal_not_in_log_file_or_pipe(tmp_path, fast_overrides):
    out = tmp_path / "run"
    screen = _run_in_pty([*fast_overrides, f"hydra.run.dir={out}"], cwd=tmp_path)
    assert "steps/s" in screen and "step" in screen  # tqdm's postfix and unit
    log_text = (out / "trpo_lab.log").read_text()
    assert "training TRPO" in log_text and "steps/s" not in log_text

    piped = subprocess.run([sys.executable, "-m", "trpo_lab", *fast_overrides, f"hydra.run.dir={tmp_path / 'p'}"],
                           cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0
    assert "steps/s]" not in piped.stderr and "%|" not in piped.stderr
