"""One YAML file → a plan of jobs → a resumable run: train → generate → score → metrics → analysis → report.

The config is validated whole before any work (unknown keys, unknown names, scorers that do not apply to their
benchmark), with the YAML path of each problem (`config`). It is resolved against the data into an `Experiment`
and planned as jobs (`plan`); `jobs` says what each job does, an executor runs them (`local`, `ray`), recording
each in the run's job ledger as it finishes, so the same command resumes after any interruption; `finish` computes
metrics and analyses and writes the report; `run` strings it together.
"""

from valueharm.experiment.config import ExperimentConfig, builtin_config, load_config
from valueharm.experiment.local import Executor, LocalExecutor
from valueharm.experiment.plan import Experiment, PlanSummary
from valueharm.experiment.run import make_executor, report_run, run_experiment

__all__ = [
    "Executor",
    "Experiment",
    "ExperimentConfig",
    "LocalExecutor",
    "PlanSummary",
    "builtin_config",
    "load_config",
    "make_executor",
    "report_run",
    "run_experiment",
]
