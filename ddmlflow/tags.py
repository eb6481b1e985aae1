"""Every tag key ddmlflow writes or reads, declared once.

One place to see every tag a run (or a registered model, or a claim) can
carry: the MLflow UI filters and groups by them, the report and the reuse
logic read them back, and old runs keep them, so a key's string never
changes. Modules import the constants; none spells a key itself.

This is a base module: it imports nothing from the package.
"""

from __future__ import annotations

# --- MLflow's own keys (the UI shows them specially)
RUN_NAME_TAG = "mlflow.runName"  # the run's name in the runs table
PARENT_TAG = "mlflow.parentRunId"  # the parent run: nests the run under it in the UI
NOTE_TAG = "mlflow.note.content"  # the run's description (Markdown)

# --- Run identity and role
STEP_TAG = "ddmlflow.step"  # the step a run performs: train_global, compose, reproduce, tune_trial ...
COMMAND_TAG = "ddmlflow.command"  # on a parent: the command that opened it (full, tune, reproduce ...)
PRESET_TAG = "ddmlflow.preset"  # the configuration's preset
DATASET_TAG = "ddmlflow.dataset"  # the data set's name
MODEL_TAG = "ddmlflow.model"  # the network's name (vgg3, resnet20 ...)
DECOMPOSITION_TAG = "ddmlflow.decomposition"  # the decomposition, short: 2x2, typeB, custom
OVERLAP_TAG = "ddmlflow.overlap"  # the subdomains' overlap (delta)
BOX_TAG = "ddmlflow.box"  # on a training: its subdomain (box index), or "global"
NETWORK_TAG = "network"  # on a tuning: the network tuned (global, coarse, local/NN)
STRATEGY_TAG = "strategy"  # on a composition: the strategy that combined the locals
GROUP_TAG = "ddmlflow.group"  # on a packed training: the group it trained in
REUSED_TAG = "ddmlflow.reused"  # on a parent: the steps it took from earlier runs
SOURCE_RUN_TAG = "ddmlflow.source_run"  # on a registered model: the run that logged it
PARENT_RUN_TAG = "ddmlflow.parent_run"  # on a registered model: that run's parent

# --- Reuse and claims
KEY_TAG = "ddmlflow.step_key"  # the hash of a step's inputs: a later run with it reuses this one
KEY_CODE_TAG = "ddmlflow.key.code"  # the code version that went into the key
SUCCESSOR_TAG = "ddmlflow.successor"  # on a launcher-only run: the run that did its work
REASON_TAG = "failure_reason"  # why the run failed (traceback's last lines)
CLAIM_HOST_TAG = "host"  # on a claim: the holder's host
CLAIM_PID_TAG = "pid"  # on a claim: the holder's process id
CLAIM_STARTED_TAG = "started"  # on a claim: the holder's process start time (tells a reused pid apart)
CLAIM_TOKEN_TAG = "token"  # on a claim: the holder's random token
CLAIM_HEARTBEAT_TAG = "heartbeat"  # on a claim: the holder's last heartbeat (epoch seconds)
CLAIM_WHAT_TAG = "what"  # on a claim: the step claimed
CLAIM_RUN_TAG = "run"  # on a claim: the run claimed ("" for a new one)

# --- Process and device
DEVICE_TAG = "ddmlflow.device"  # the device a training runs on (CPU, GPU:0 ...): planned, then as used
CUDA_VISIBLE_DEVICES_TAG = "CUDA_VISIBLE_DEVICES"  # the process's CUDA_VISIBLE_DEVICES, or <unset>
TF_THREADS_TAG = "ddmlflow.tf_threads"  # TensorFlow's intra/inter-op threads
ONEDNN_TAG = "ddmlflow.onednn"  # whether TensorFlow's oneDNN CPU kernels are on
PID_TAG = "ddmlflow.pid"  # the training process's id (set once a training starts)
PID_STARTED_TAG = "ddmlflow.pid_started"  # that process's start time
HOST_TAG = "ddmlflow.host"  # that process's host
EXECUTOR_TAG = "ddmlflow.executor"  # the executor that ran the step: process, packed, ray ...
SPEEDUP_EXECUTORS_TAG = "ddmlflow.speedup_executors"  # on an evaluation: the executors its timings came from

# --- Data and models
NUM_CLASSES_TAG = "num_classes"  # on a decomposition: the data set's number of classes
CLASS_NAMES_TAG = "class_names"  # on a decomposition: the class names, comma-separated
MODEL_ID_TAG = "ddmlflow.model_id"  # on a model version: its logged model's id (the sqlite registry leaves it empty)
MODEL_URI_TAG = "model_uri"  # the run's logged model (models:/<id>): a training's net, evaluate's CNN-DNN
REGISTERED_MODEL_TAG = "registered_model"  # on an evaluation: the registered model's name
REGISTERED_VERSION_TAG = "registered_version"  # on an evaluation: the registered version
VAL_ACCURACY_TAG = "val_accuracy"  # on a model version: its validation accuracy (picks the champion)
HPARAMS_TAG = "ddmlflow.hparams"  # the tuned hyperparameters a training used (JSON)
HPARAMS_SOURCE_TAG = "ddmlflow.hparams.source"  # where they came from (a file, a run, or <dict>)
HPARAMS_NETWORK_TAG = "ddmlflow.hparams.network"  # the network they were tuned for

# --- Tuning
TRIAL_TAG = "ddmlflow.trial_id"  # on a trial run: the tuner's trial id
TRIAL_STATUS_TAG = "ddmlflow.trial_status"  # on a trial run: the trial's status
BEST_TAG = "ddmlflow.best_trial"  # on the best trial's run: "true"
BEST_TRIAL_TAG = "best_trial"  # on a tuning run: the best trial's id
BEST_TRIAL_RUN_TAG = "best_trial_run"  # on a tuning run: the best trial's run id

# --- Reproduce
TABLE_TAG = "ddmlflow.table"  # the paper's table a run reproduces
ROW_TAG = "ddmlflow.row"  # the table's row
ROW_NAME_TAG = "ddmlflow.row_name"  # the row's name in the report
BUDGET_TAG = "ddmlflow.budget"  # the training budget's name
BUDGET_VALUES_TAG = "ddmlflow.budget_values"  # the budget's values, in words
FULL_RUNS_TAG = "ddmlflow.full_runs"  # on a reproduce parent: JSON list of its `full` run ids

# --- Prefixes: keys built from a name
NAMESPACE = "ddmlflow."  # every ddmlflow key starts so
RUN_PREFIX = "ddmlflow.run."  # on a parent: the run id of each of its steps
RAY_PREFIX = "ddmlflow.ray."  # node_id, node_ip, gpu_ids, pid, attempts, node_ids, log, previous_failure
VERSION_PREFIX = "ddmlflow.version."  # python, ddmlflow, code and each direct dependency's version


def run_tag(step_name: str) -> str:
    """The parent's tag holding the run id of its step ``step_name``."""
    return RUN_PREFIX + step_name


def ray_tag(name: str) -> str:
    """A Ray executor's tag: where (and how often) a step ran on the cluster."""
    return RAY_PREFIX + name


def version_tag(name: str) -> str:
    """The tag holding the version of ``name`` (a package, python, or code)."""
    return VERSION_PREFIX + name
