"""What a valid config can still get wrong on this machine, checked before anything starts (the
CLI's ``train``, a sweep's driver): the state_dict files it names must load with
``weights_only=True`` (into the model, for a zoo model), and its zoo model must fit in memory."""

from __future__ import annotations

from raysparse.train.checkpoint import load_state_dict_file
from raysparse.train.memory import check_fits_in_memory


def check_before_training(config, *, memory: bool = True, data: object = None, prefix: str = "") -> None:
    """``prefix`` goes before every field an error names (``base.`` in a sweep). ``memory``
    False skips the memory check (a cluster's workers are not this machine). ``data``: a
    Python object that builds the data (``raysparse.sweep(data=...)``)."""
    import torch

    from raysparse.tasks import build_task
    from raysparse.train.loop import load_into
    from raysparse.zoo.models import build_model
    from raysparse.zoo.user_code import build_splits, is_user_code

    files = {"init_from": config.init_from}
    if config.robustness is not None:
        files["robustness.reference"] = config.robustness.reference
    files = {field: path for field, path in files.items() if path is not None}
    if config.loop is not None or is_user_code(config.model):  # built, and checked, by their code
        for field, path in files.items():
            load_state_dict_file(path, prefix + field)
        return
    if not (files or memory):
        return
    if isinstance(config.task, dict) and "python" in config.task:  # task=: the data needs the object
        return
    task = build_task(config.task, label_smoothing=config.label_smoothing)
    splits = build_splits(config.data, config.seed, task, given=data)
    if memory:
        check_fits_in_memory(config, splits.info, prefix + "model")
    with torch.device("meta"):  # the architecture only: the files' tensors are not copied anywhere
        network = build_model(config.model, splits.info)
    for field, path in files.items():
        load_into(network, path, prefix + field, assign=True)
