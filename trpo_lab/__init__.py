"""trpo_lab: Trust Region Policy Optimization experiments, composed by Hydra and searched by Optuna."""

__version__ = "0.1.0"
