"""Metric and summary names: defined once, used by the trainer, loggers, sweeper and reports.

These strings are a contract (docs/design.md): `metrics.jsonl`, wandb and
`summary.json` use them verbatim, and sweeps read `summary.json` fields.
"""

# Always present in every metrics.jsonl row.
ITERATION = "iteration"
ENV_STEPS = "env_steps"
WALL_TIME = "wall_time_s"

EP_RETURN = "rollout/ep_return_mean"
EP_LEN = "rollout/ep_len_mean"
KL = "train/kl"
KL_LIMIT = "train/kl_limit"  # the trust region's delta, beside train/kl for "KL against delta" charts
SURROGATE_GAIN = "train/surrogate_gain"
LINE_SEARCH_STEPS = "train/line_search_steps"
LINE_SEARCH_SUCCESS = "train/line_search_success"
STEP_FRACTION = "train/step_fraction"
CG_RESIDUAL = "train/cg_residual"
ENTROPY = "train/entropy"
VALUE_LOSS = "train/value_loss"
EXPLAINED_VARIANCE = "train/explained_variance"
STEPS_PER_S = "time/steps_per_s"
# Staleness of the batch (docs/off_policy.md): the lag of a sample is how many updates
# older than pi_old its behaviour policy is.
POLICY_LAG_MEAN = "rollout/policy_lag_mean"
POLICY_LAG_MAX = "rollout/policy_lag_max"
BEHAVIOUR_KL = "train/behaviour_kl"   # mean KL(beta || pi_old) over the batch's states
IS_RATIO_MAX = "train/is_ratio_max"   # largest pi_old / beta in the batch
IS_ESS = "train/is_ess"               # effective sample size of pi_old / beta, fraction of the batch
EVAL_RETURN = "eval/return_mean"
EVAL_RETURN_STD = "eval/return_std"

# Every iteration writes these (EVAL_* only on evaluating iterations; the last row holds the final one).
PER_ITERATION = (
    ITERATION, ENV_STEPS, WALL_TIME, EP_RETURN, EP_LEN, KL, KL_LIMIT, SURROGATE_GAIN,
    LINE_SEARCH_STEPS, LINE_SEARCH_SUCCESS, STEP_FRACTION, CG_RESIDUAL, ENTROPY,
    VALUE_LOSS, EXPLAINED_VARIANCE, STEPS_PER_S, POLICY_LAG_MEAN, POLICY_LAG_MAX, BEHAVIOUR_KL,
    IS_RATIO_MAX, IS_ESS,
)



class Summary:
    """summary.json's fields (docs/design.md, The output files)."""

    ENV_ID = "env_id"
    ENV_STEPS = "env_steps"
    ITERATIONS = "iterations"
    WALL_TIME = "wall_time_s"
    STEPS_PER_S = "steps_per_s"
    TRAIN_RETURN_LAST10 = "train_return_last10"
    EVAL_RETURN = "eval_return"
    EVAL_RETURN_STD = "eval_return_std"
    BEST_EVAL_RETURN = "best_eval_return"
    OBJECTIVE = "objective"   # the value of the field that trainer.objective names
    STATUS = "status"         # one of Status
    ERROR = "error"           # only when the status is not COMPLETED


SUMMARY_FIELDS = (
    Summary.ENV_ID, Summary.ENV_STEPS, Summary.ITERATIONS, Summary.WALL_TIME, Summary.STEPS_PER_S,
    Summary.TRAIN_RETURN_LAST10, Summary.EVAL_RETURN, Summary.EVAL_RETURN_STD, Summary.BEST_EVAL_RETURN,
    Summary.OBJECTIVE, Summary.STATUS,
)
# The fields that trainer.objective may name.
OBJECTIVES = (Summary.EVAL_RETURN, Summary.BEST_EVAL_RETURN, Summary.TRAIN_RETURN_LAST10)


class Status:
    """summary.json's status of a run."""

    COMPLETED = "completed"
    PRUNED = "pruned"            # stopped early by the sweeper's pruner
    INTERRUPTED = "interrupted"  # Ctrl-C or a signal; rerun to resume
    FAILED = "failed"
    UNFINISHED = "unfinished"    # the reports' word for a run directory without summary.json
