"""Other evaluation sets (``robustness.datasets``), for any task: "Lost in Pruning"'s question asked of
a language model, does the sparse model hold on text it was not tuned on?"""

import copy
import random

import pytest

from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.robustness.evaluate import IMAGE_DEFAULTS
from raysparse.tracking.naming import flatten_metrics
from raysparse.train import fit
from tests.conftest import lm_config, small_config

# no word, and no letter but 'e', 'o', 'u', of the corpus conftest.write_text writes (WORDS): bytes the
# model never saw follow each other here
OTHER_WORDS = "fuzzy jukebox quiz vex jowl fez yuzu zephyr buxom joey".split()


@pytest.fixture(scope="module")
def other_text(tmp_path_factory) -> str:
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("other") / "other.txt"
    path.write_text("\n".join(" ".join(rng.choice(OTHER_WORDS) for _ in range(10)) for _ in range(150)))
    return str(path)


def with_datasets(cfg: dict, **datasets: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["robustness"] = {"datasets": datasets}
    return cfg


def text_block(path: str) -> dict:
    return {"name": "text", "path": path, "block_size": 32}


def test_a_language_model_is_worse_on_text_it_never_saw(text_file, other_text):
    cfg = with_datasets(lm_config(text_file, "gmp"), other=text_block(other_text), same=text_block(text_file))
    reports = []
    final = fit(cfg, lambda metrics, context: reports.append(metrics))
    assert all("shift" not in metrics for metrics in reports[:-1])  # once, at the end
    flat = flatten_metrics(final)
    # the keys MLflow gets, as the loop names them: flatten_metrics replaces nothing in them
    assert {"shift.other.perplexity", "shift.other.loss", "shift.same.perplexity", "shift.same.loss"} <= set(flat)
    assert flat["shift.other.perplexity"] > flat["test_perplexity"]
    # the same text as a shift is the run's own test split (held out with a fixed seed): the same number
    assert flat["shift.same.perplexity"] == pytest.approx(flat["test_perplexity"], rel=1e-9)
    # nothing of the image suite for a language model
    assert not any(key.startswith(("corrupted_accuracy", "noise_", "ece", "excess")) for key in flat)


def test_a_classifier_gets_the_image_suite_and_its_datasets():
    cfg = small_config("gmp")
    cfg["robustness"] = {"corruptions": ["contrast"], "severities": [5], "noise_eps": [0.1],
                         "datasets": {"again": dict(cfg["data"])}}
    final = fit(cfg)
    assert set(final["corrupted_accuracy"]) == {"contrast_5"} and 0 <= final["ece"] <= 1
    assert set(final["shift"]["again"]) == {"accuracy", "loss"}
    assert final["shift"]["again"]["accuracy"] == final["test_accuracy"]  # the same data, the same test split


@pytest.mark.parametrize("option", list(IMAGE_DEFAULTS))
def test_image_options_with_a_language_model_are_refused_naming_the_field(text_file, other_text, option):
    cfg = with_datasets(lm_config(text_file), other=text_block(other_text))
    default = IMAGE_DEFAULTS[option]
    cfg["robustness"][option] = list(default) if isinstance(default, tuple) else default  # set, if to its default
    with pytest.raises(ConfigError) as refused:
        load_config(cfg)
    assert refused.value.field == f"robustness.{option}"
    assert "apply to image classifiers, not to task 'causal_lm'" in refused.value.message


def test_a_language_model_block_without_datasets_is_refused(text_file):
    cfg = lm_config(text_file)
    cfg["robustness"] = {"split": "val"}
    with pytest.raises(ConfigError, match=r"^robustness\.datasets: got \{\}; allowed: other evaluation sets"):
        load_config(cfg)


def test_bad_datasets_name_the_field(text_file, tmp_path):
    cfg = lm_config(text_file)
    cases = {
        "robustness.datasets": {"wiki.en": text_block(text_file)},  # a dot would split the metric key
        "robustness.datasets.wiki.path": {"wiki": text_block(str(tmp_path / "missing.txt"))},
        "robustness.datasets.wiki.blocksize": {"wiki": {"name": "text", "path": text_file, "blocksize": 32}},
        "robustness.datasets.wiki.name": {"wiki": {"name": "wikitext", "path": text_file}},
        "robustness.datasets.wiki.factory": {"wiki": {"factory": "not an import path"}},
        "robustness.datasets.wiki.val_fraction": {"wiki": {**text_block(text_file), "val_fraction": 0.0}},
    }
    for field, datasets in cases.items():
        bad = with_datasets(cfg, **datasets)
        bad["robustness"]["split"] = "val"
        with pytest.raises(ConfigError) as refused:
            load_config(bad)
        assert refused.value.field == field, (field, refused.value)


def test_a_task_object_validation_cannot_import_is_refused_in_the_loop(text_file, other_text):
    from raysparse.tasks.causal_lm import CausalLM

    class LocalLM(CausalLM):  # <locals>: not importable, so validation cannot tell it is no classifier
        pass

    cfg = with_datasets(lm_config(text_file), other=text_block(other_text))
    cfg["epochs"], cfg["sparsity"]["prune_end"], cfg["robustness"]["noise_eps"] = 1, 1, [0.1]
    with pytest.raises(ConfigError, match=r"^robustness\.noise_eps: got \[0\.1\], but image corruptions"):
        fit(cfg, task=LocalLM)
    del cfg["robustness"]["noise_eps"]
    assert fit(cfg, task=LocalLM)["shift"]["other"]["perplexity"] > 1


def test_data_errors_of_a_dataset_name_its_block(text_file, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short")  # passes validation (it exists), fails when read: too little text
    cfg = with_datasets(lm_config(text_file), tiny=text_block(str(tiny)))
    cfg["epochs"], cfg["sparsity"]["prune_end"] = 1, 1
    with pytest.raises(ConfigError, match=r"^robustness\.datasets\.tiny\.path: too little text"):
        fit(cfg)


def test_a_robustness_block_survives_the_round_trip_params_and_checkpoints_make(text_file, other_text):
    language_model = with_datasets(lm_config(text_file), other=text_block(other_text))
    classifier = small_config()
    classifier["robustness"] = {"severities": [5], "datasets": {"again": {"name": "digits"}}}
    for raw in (language_model, classifier):
        config = load_config(raw)
        assert load_config(config.to_dict()) == config
    # left unset, an image option is recorded at the classifier's default (as every default is), and
    # stays unset for a language model
    assert load_config(classifier).robustness.corruptions == IMAGE_DEFAULTS["corruptions"]
    assert load_config(classifier).robustness.max_examples == IMAGE_DEFAULTS["max_examples"]
    assert load_config(language_model).robustness.given_image_options() == []
