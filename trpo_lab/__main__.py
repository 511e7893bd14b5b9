"""`python -m trpo_lab [overrides]`: compose the config with Hydra and train."""
import hydra
from omegaconf import DictConfig

from trpo_lab.app import run
from trpo_lab.config import register_configs

register_configs()


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run(cfg)


if __name__ == "__main__":
    main()
