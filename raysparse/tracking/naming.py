"""How a sweep's runs are named, shared by the writing side and the report side.

- params: the config flattened with dots (``sparsity.final_sparsity``), values ``str()``-ed,
  cut at MLflow's 6000 characters with a ``...[truncated]`` marker;
- metrics: nested dicts flattened the same way (``layer_density.layer1.0.conv1``); characters
  MLflow rejects in names (anything but letters, digits, ``_ - . space``) become ``_``;
- a trial's run carries ``raysparse.trial_id``: that tag, under the sweep's parent run, is how a
  retried trial finds and continues its run instead of creating a second one;
- a trial's mask lineage is its ``masks/lineage.jsonl`` artifact;
- a PBT trial that copied another's checkpoint records it in ``pbt/exploits.json`` and tags
  ``raysparse.pbt.exploits`` and ``raysparse.pbt.param.<key>`` (params cannot change).
- a sweep's dense stage (``pretrain:``) is a child run too, with role ``stage`` and
  ``raysparse.stage: pretrain``: not a trial (trial lists select role ``trial``).
"""

from __future__ import annotations

import numbers
import re
import sys

import numpy as np

ROLE_TAG, SWEEP_TAG, TRIAL_TAG = "raysparse.role", "raysparse.sweep", "raysparse.trial_id"
FAILURE_TAG, PARENT_TAG = "raysparse.failure_reason", "mlflow.parentRunId"
STAGE_TAG, PRETRAIN = "raysparse.stage", "pretrain"
LINEAGE = "masks/lineage.jsonl"
# a PBT trial's exploits (where its weights and masks came from, the values it switched to)
EXPLOITS, PBT_EXPLOITS_TAG, PBT_PARAM_TAG = "pbt/exploits.json", "raysparse.pbt.exploits", "raysparse.pbt.param."
# on a trial's run whose final artifacts its process uploads after the trial returned: RUNNING
# until they are in, it is not a killed trial
FINAL_UPLOAD_TAG = "raysparse.final_upload"  # its value: the uploading process, as PROCESS_TAG gives it
PROCESS_TAG = "raysparse.process"  # node id and pid of the process a trial ran in
_MAX_PARAM_LENGTH, _TRUNCATED = 6000, "...[truncated]"


def trial_run_name(trial_id: str, method: str, final_sparsity: float) -> str:
    """``granet-s0.9-1a2b3c4d``: what the trial is, readable in the MLflow runs table."""
    return f"dense-{trial_id}" if method == "dense" else f"{method}-s{final_sparsity:.3g}-{trial_id}"


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")


def redact(text: str) -> str:
    """``https://user:secret@host`` -> ``https://***@host``: URIs with credentials never reach a
    param, an artifact or a log line."""
    return _CREDENTIALS.sub("***@", text)


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"sparsity": {"final_sparsity": 0.9}}`` -> ``{"sparsity.final_sparsity": "0.9"}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{prefix}{key}."))
            continue
        text = redact(str(value))
        if len(text) > _MAX_PARAM_LENGTH:  # MLflow would reject the whole batch
            text = text[: _MAX_PARAM_LENGTH - len(_TRUNCATED)] + _TRUNCATED
        flat[f"{prefix}{key}"] = text
    return flat


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numbers, nested dicts of numbers -> dotted metric names; anything else is a TypeError."""
    flat = {}
    for key, value in metrics.items():
        name = prefix + re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(key))
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name + "."))
        elif isinstance(value, (numbers.Real, np.bool_)) or _one_element_tensor(value):
            if name in flat:
                raise ValueError(f"metric names {key!r} and another key both become {name!r}")
            flat[name] = float(value)
        else:
            raise TypeError(f"metric {prefix + str(key)!r} is a {type(value).__name__} ({value!r:.60}); only numbers "
                            "or dicts of numbers can be logged")
    return flat


def _one_element_tensor(value) -> bool:
    # a tensor exists only once torch is imported: reports read runs without importing it (seconds)
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1
