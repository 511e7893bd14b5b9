"""Hydra finds sweepers only under the hydra_plugins namespace; the code lives in trpo_lab.sweeper."""
