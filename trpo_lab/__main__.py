"""`python -m trpo_lab [overrides]`: compose the config with Hydra and train."""
import os
import sys
from pathlib import Path

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from trpo_lab.app import run
from trpo_lab.config import register_configs

register_configs()
_PACKAGE = Path(__file__).resolve().parent


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run(cfg)


def _raised_in_trpo_lab(err: BaseException) -> bool:
    """True when trpo_lab's own code (beyond this entry point) raised: a bug, worth a traceback."""
    tb = err.__traceback__
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename).resolve()
        if path.is_relative_to(_PACKAGE) and path != Path(__file__).resolve():
            return True
        tb = tb.tb_next
    return False


def cli() -> None:
    """Hydra's main, with errors in the command line reported as a message, not a traceback.

    Hydra prints some composition errors (`env=0`: "Config group override must
    be a string") with a stack trace. HYDRA_FULL_ERROR=1 makes Hydra raise them
    to us instead; we print the message alone, unless the user set
    HYDRA_FULL_ERROR=1 themselves or the error came from trpo_lab's code.
    """
    user_wants_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except Exception as err:
        if user_wants_traces or _raised_in_trpo_lab(err):
            raise
        message = str(err).strip()
        if isinstance(err, CompactHydraException) and err.__cause__ is not None:
            message += "\n" + str(err.__cause__).strip()
        if not isinstance(err, CompactHydraException):
            message = " ".join(message.split())
        print(f"trpo_lab: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
