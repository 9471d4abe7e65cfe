"""HuggingFace causal language models as zoo model ``hf``: a local checkpoint or a config dict.

The one module that imports ``transformers`` (the ``hf`` extra), inside the factory: registering
the model costs nothing, and a user without the extra hears what to install when asking for it.
Models are never downloaded (``local_files_only``): ``path`` is a directory written by
``save_pretrained``. A head tied to the token embedding (``tie_word_embeddings``) stays dense:
the masks leave it to the embedding (:func:`raysparse.sparsity.masks.weight_slots`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from raysparse.errors import ConfigError, did_you_mean, shown, unknown_choice
from raysparse.zoo.models import MODELS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# keys transformers takes by name that are not fields of the config class: the model type itself,
# the attention kernel, and rope_scaling (v4's name of rope_parameters)
EXTRA_CONFIG_KEYS = ("model_type", "attn_implementation", "rope_scaling", "output_attentions")


@MODELS.register("hf")
def hf(
    vocab_size: int | None = None, *, path: str | None = None, config: Mapping | None = None, dtype: str = "float32"
) -> nn.Module:
    """A HuggingFace ``AutoModelForCausalLM`` from exactly one of ``path`` (a local directory) or
    ``config`` (``{"model_type": "llama", "hidden_size": 32, ...}``, randomly initialised).

    ``vocab_size`` comes from the data: a config without one takes it; a model whose vocabulary is
    smaller than the data's is refused. ``dtype``: float32, bfloat16 or float16.
    """
    if (path is None) == (config is None):
        raise ConfigError("path", f"got path={shown(path)} and config={shown(config)}; allowed: exactly one of "
                          "path (a local directory written by save_pretrained) or config (a dict with a model_type)")
    if dtype not in DTYPES:
        raise unknown_choice("dtype", "dtype", dtype, DTYPES)
    transformers = _import_transformers()
    if path is not None:
        field, hf_config = "path", _saved_config(transformers, path)
    else:
        field, hf_config = "config", _config_from_dict(transformers, config, vocab_size)
    _check_vocabulary(hf_config, vocab_size, field)
    auto = transformers.AutoModelForCausalLM
    try:
        if path is not None and torch.get_default_device().type != "meta":
            model = auto.from_pretrained(Path(path).expanduser(), config=hf_config, local_files_only=True,
                                         dtype=DTYPES[dtype])
        else:  # a meta build (a config check, a memory estimate) counts the weights without reading them
            model = auto.from_config(hf_config, dtype=DTYPES[dtype])
    except Exception as error:  # whatever transformers refuses is the user's input
        raise ConfigError(field, f"{shown(path if path is not None else config)}: "
                          f"{type(error).__name__}: {error}") from None
    return model.train()  # from_pretrained returns eval mode; every zoo model starts in training mode


def load_tokenizer(directory: Path, field: str):
    """A HuggingFace tokenizer from a local directory (the ``text`` data source's ``tokenizer``)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError(field, f"{str(directory)!r} holds no tokenizer transformers can load: {error}") from None


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("name", "model 'hf' needs transformers: pip install 'raysparse[hf]'") from None
    return transformers


def _saved_config(transformers, path: object):
    if not isinstance(path, str) or not Path(path).expanduser().is_dir():
        raise ConfigError("path", f"got {shown(path)}; allowed: an existing local directory written by "
                          "save_pretrained (models are not downloaded)")
    try:
        return transformers.AutoConfig.from_pretrained(Path(path).expanduser(), local_files_only=True)
    except Exception as error:  # a damaged or foreign directory
        raise ConfigError("path", f"{shown(path)}: {type(error).__name__}: {error}") from None


def _config_from_dict(transformers, config: object, vocab_size: int | None):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not isinstance(config, Mapping) or not isinstance(config.get("model_type"), str):
        raise ConfigError("config", f"got {shown(config)}; allowed: a mapping with a model_type such as 'llama'")
    model_type = config["model_type"]
    if model_type not in CONFIG_MAPPING:
        raise unknown_choice("config.model_type", "model type", model_type, CONFIG_MAPPING.keys())
    config_class = CONFIG_MAPPING[model_type]
    if dataclasses.is_dataclass(config_class):  # transformers keeps an unknown key silently: a typo would be lost
        known = {f.name for f in dataclasses.fields(config_class)} | set(config_class.attribute_map)
        known |= set(EXTRA_CONFIG_KEYS)
        for key in config:
            if key not in known:
                raise ConfigError(f"config.{key}", f"unknown key for model_type {model_type!r}; allowed: "
                                  f"{', '.join(sorted(known))}{did_you_mean(key, known)}")
    options = dict(config)
    if vocab_size is not None and "vocab_size" not in options:
        options["vocab_size"] = vocab_size
    try:
        return transformers.AutoConfig.for_model(**options)
    except Exception as error:  # a value the config class validates and refuses
        raise ConfigError("config", f"{shown(config)}: {type(error).__name__}: {error}") from None


def _check_vocabulary(hf_config, vocab_size: int | None, field: str) -> None:
    model_vocabulary = getattr(hf_config.get_text_config(), "vocab_size", None)
    if vocab_size is not None and model_vocabulary is not None and model_vocabulary < vocab_size:
        raise ConfigError(field, f"the model's vocab_size={model_vocabulary} is smaller than the data's "
                          f"vocabulary of {vocab_size} tokens; allowed: a model with vocab_size >= {vocab_size}")
