"""`python -m trpo_lab [overrides]`: compose the config with Hydra and train."""
import difflib
import math
import os
import sys
from pathlib import Path

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from trpo_lab.app import run
from trpo_lab.checkpoint import CheckpointError
from trpo_lab.config import ConfigError, register_configs, unknown_setting
from trpo_lab.envs import EnvError
from trpo_lab.trainer import DivergedError

register_configs()
_PACKAGE = Path(__file__).resolve().parent


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run(cfg)


def _integer_keys() -> set[str]:
    """Dotted keys whose schema type is int (or Optional[int])."""
    import dataclasses
    import typing

    from trpo_lab.config import Config

    out: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
            elif hint is int or hint == typing.Optional[int]:
                out.add(prefix + f.name)

    walk(Config, "")
    return out


def integral_floats(args: list[str]) -> list[str]:
    """Overrides with `1e5` or `2048.0` for an integer setting written as integers, so
    `trainer.total_steps=1e5` works (OmegaConf refuses any float for an int); sweeps of
    plain values (`=1e5,2e5`) too. A non-integral value is left for OmegaConf to refuse."""
    keys = _integer_keys()
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in keys and "(" not in value:
            parts = value.split(",")
            try:
                numbers = [float(v) for v in parts]
            except ValueError:
                numbers = []
            if numbers and all(math.isfinite(x) and x == int(x) for x in numbers) \
                    and any(not v.strip().lstrip("+-").isdigit() for v in parts):
                arg = f"{key}={','.join(str(int(x)) for x in numbers)}"
        out.append(arg)
    return out


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

    A multirun job raises its bad config, unknown env or divergence (a single
    run prints them itself, app.py); Hydra's basic sweeper re-raises the first
    once every job has run: one line for it too, exit 2 (config) or 1.
    """
    user_wants_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv[1:] = integral_floats(sys.argv[1:])
    try:
        main()
    except (ConfigError, EnvError, DivergedError, CheckpointError) as err:
        if user_wants_traces:
            raise
        print(f"trpo_lab: error: a job failed: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    except Exception as err:
        if user_wants_traces or _raised_in_trpo_lab(err):
            raise
        message = _one_line_message(err)
        if message is None:
            message = str(err).strip()
            if isinstance(err, CompactHydraException) and err.__cause__ is not None:
                message += "\n" + str(err.__cause__).strip()
            if not isinstance(err, CompactHydraException):
                message = " ".join(message.split())
        print(f"trpo_lab: error: {message}", file=sys.stderr)
        sys.exit(2)


def _one_line_message(err: BaseException) -> str | None:
    """One line for the command-line mistakes Hydra reports in several; None for any other error.

    - a key the config does not have (`trpo.deltaa=0.1`, `hydra.sweeper.n_trails=2`): Hydra's five lines end in
      "Key 'deltaa' is not in struct". OmegaConf's error carries the key and the
      node it was looked up in, which lists the keys there are.
    - a value of the wrong type (`trpo.cg_iters=many`): the key and OmegaConf's reason.
    - a group option that does not exist (`env=nosuchenv`): the options there are.
    """
    from hydra.errors import MissingConfigException
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = err.__cause__
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        close = difflib.get_close_matches(option, err.options, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(f'{group}={o}' for o in close)}? " if close else ""
        return f"{group}={option} is not an option; {hint}the options for {group} are {', '.join(err.options)}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and isinstance(cause.parent_node, DictConfig) \
            and cause.full_key:
        full_key = str(cause.full_key)
        sweeper = full_key.startswith("hydra.sweeper.") and full_key.count(".") == 2  # untyped, yet not free-form
        if OmegaConf.get_type(cause.parent_node) is dict and not sweeper:  # free-form (env.kwargs): new keys come with +
            return f"{full_key} is not set yet; add it with a leading +: +{full_key}=..."
        known = [str(k) for k in cause.parent_node.keys() if "." in full_key or k != "hydra"]
        return unknown_setting(full_key, known)
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None) and getattr(cause, "msg", None):
        return f"{cause.full_key}: {str(cause.msg).strip().splitlines()[0]}"
    return None


if __name__ == "__main__":
    cli()
