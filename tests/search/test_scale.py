"""Many short trials through the normal path (benchmarks/scale.py runs 1,000; this runs 60): every
trial's run is there and FINISHED with each epoch's metrics, and the report and ``raysparse
potential`` stay readable: the HTML shows the best trials, the front and the plots, the CSV all."""

import re

import pandas as pd

import raysparse
from raysparse.report import TOP_ROWS
from tests.search.conftest import logged_steps, tiny_sweep

TRIALS = 60


def many_short_trials() -> dict:
    raw = tiny_sweep("scale", num_samples=TRIALS, objectives={"val_accuracy": "max", "density": "min"}, space={
        "sparsity.method": {"choice": ["dense", "gmp", "granet"]},  # dense: the potential's reference
        "sparsity.final_sparsity": {"uniform": [0.5, 0.95], "when": {"sparsity.method": ["gmp", "granet"]}},
    })
    raw["base"].update(epochs=1, model={"name": "mlp", "hidden": [16]})
    raw["base"]["data"]["batch_size"] = 128
    raw["base"]["sparsity"].update(prune_end=1)
    return raw


def section(page: str, title: str) -> str:
    return page.split(f"<h2>{title}")[1].split("<h2>")[0]


def test_sixty_trials_all_recorded_and_the_report_shows_the_best(ray_runtime, home, tmp_path, monkeypatch, capsys):
    from raysparse.cli import main

    result = raysparse.sweep(many_short_trials(), home=home, verbose=False)
    trials = result.to_dataframe()
    assert len(trials) == TRIALS and trials["trial_id"].is_unique
    assert (trials["status"] == "FINISHED").all(), trials["status"].value_counts()
    for run_id in trials["run_id"]:  # no lost metric: each run has its one epoch of each
        assert logged_steps(result.tracking_uri, run_id) == dict.fromkeys(
            ("epoch", "train_loss", "val_accuracy", "density"), [1])

    monkeypatch.setenv("RAYSPARSE_HOME", str(home))
    assert main(["report", "scale", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"... {TRIALS - TOP_ROWS} more in scale_trials.csv" in printed  # the terminal gets the best too
    page = (tmp_path / "scale.html").read_text()
    table = section(page, "Trials, best first")
    assert table.count("<tr") == TOP_ROWS + 1 and f"The {TOP_ROWS} best of {TRIALS} trials" in table  # + header
    front = pd.read_csv(tmp_path / "scale_pareto.csv")
    shown_front = section(page, "Pareto front")
    assert f"({len(front)} trials)" in page and shown_front.count("<tr class='front'>") == min(len(front), TOP_ROWS)
    # objectives with the front, the search history, the potential, and figures of the front's first trials
    assert page.count("data:image/png;base64,") >= 3 + 2 and page.count("<h2>Trial ") <= 6
    best = re.search(r"<td class='text'><a href='[^']+'>(\w+)</a>", table).group(1)
    ranked = pd.read_csv(tmp_path / "scale_trials.csv", dtype={"trial_id": str})  # "1e5..." is an id
    assert len(ranked) == TRIALS and ranked["trial_id"].iloc[0] == best  # the CSV: every trial, best first

    assert main(["potential", "scale", "--out", str(tmp_path)]) == 0
    potential = pd.read_csv(tmp_path / "scale_potential.csv", index_col=0)
    assert set(potential.columns) == {"gmp", "granet"} and potential.loc["clean"].between(0, 1).all()
