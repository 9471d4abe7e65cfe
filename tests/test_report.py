import pandas as pd
import pytest

from raysparse.report import other_texts, pareto_front, rank_trials, write_report

TRIALS = pd.DataFrame({
    "trial_id": ["a", "b", "c", "d", "e"],
    "metrics.val_accuracy": [0.90, 0.95, 0.85, 0.95, None],
    "metrics.flops_sparse": [100, 300, 50, 200, 10],
    "params.sparsity.method": ["gmp", "granet", "rigl", "granet", "gmp"],
    "metrics.density": [0.1, 0.3, 0.05, 0.2, 0.01],
})
BOTH = [("metrics.val_accuracy", "max"), ("metrics.flops_sparse", "min")]


def test_pareto_front_by_hand():
    # b is dominated by d (same accuracy, fewer FLOPs); e never reported accuracy
    assert sorted(pareto_front(TRIALS, BOTH)["trial_id"]) == ["a", "c", "d"]


def test_the_front_holds_finished_trials_only():
    # c, stopped early by ASHA, has no final network: d and a form the front without it
    trials = TRIALS.assign(status=["FINISHED", "FINISHED", "KILLED", "FINISHED", "FINISHED"])
    trials.loc[2, "metrics.val_accuracy"] = 0.99  # at an earlier epoch c even dominated everyone
    assert sorted(pareto_front(trials, BOTH)["trial_id"]) == ["a", "d"]


def test_rank_puts_best_first_and_missing_last():
    ranked = rank_trials(TRIALS, [("metrics.val_accuracy", "max"), ("metrics.flops_sparse", "min")])
    assert list(ranked["trial_id"]) == ["d", "b", "a", "c", "e"]
    assert list(rank_trials(TRIALS, [("metrics.flops_sparse", "min")])["trial_id"])[:2] == ["e", "c"]


def test_write_report_files(tmp_path):
    paths = write_report(TRIALS, BOTH, tmp_path, name="s", best_config={"params.sparsity.method": "granet"})
    assert set(paths) == {"trials", "plot", "history", "best", "pareto", "html"}
    assert pd.read_csv(paths["trials"])["trial_id"].tolist() == ["d", "b", "a", "c", "e"]
    assert len(pd.read_csv(paths["pareto"])) == 3
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG" and paths["history"].read_bytes()[:4] == b"\x89PNG"


def test_html_report_embeds_figures_marks_the_front_and_links_trials(tmp_path):
    potential = pd.DataFrame({"gmp": [0.9, 0.5], "granet": [0.95, 0.7]}, index=["clean", "contrast_5"])
    figure = tmp_path / "training.png"
    figure.write_bytes(b"\x89PNG fake")
    paths = write_report(TRIALS, BOTH, tmp_path, name="s<1>", potential=potential, page={
        "trial_figures": {"d": [figure]}, "run_url": "http://127.0.0.1:5000/#/experiments/1/runs/{run_id}",
    })
    page = paths["html"].read_text()
    assert "<title>s&lt;1&gt;: raysparse report</title>" in page  # names are escaped
    assert page.count("<tr class='front'>") == 2 * 3  # front rows, in the front table and the trial table
    assert page.count("data:image/png;base64,") == 4  # objectives, search history, potential, the trial's figure
    assert "<h2>Trial d</h2>" in page and "0.950" in page and "contrast_5" in page
    assert pd.read_csv(paths["potential"], index_col=0).loc["contrast_5", "granet"] == 0.7
    no_dense = write_report(TRIALS, BOTH[:1], tmp_path / "one", name="s", page={"potential_note": "no dense trial"})
    assert "no dense trial" in no_dense["html"].read_text() and "pareto" not in no_dense


def test_tied_trials_rank_in_their_recorded_order():
    import pandas as pd

    from raysparse.report import rank_trials

    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in range(40)], "metrics.val_accuracy": [0.5, 0.9] * 20})
    ranked = rank_trials(trials, [("metrics.val_accuracy", "max")])
    assert list(ranked["trial_id"][:20]) == [f"t{i}" for i in range(1, 40, 2)]


def test_html_tables_show_the_best_trials_and_the_csv_holds_all(tmp_path):
    """A thousand-trial sweep's page holds ``top`` rows per table and says where the rest are."""
    import numpy as np

    rng = np.random.default_rng(0)
    many = pd.DataFrame({
        "trial_id": [f"t{i:03d}" for i in range(120)], "status": "FINISHED",
        "metrics.val_accuracy": rng.uniform(0.5, 1.0, 120), "metrics.flops_sparse": rng.uniform(10, 300, 120),
    })
    paths = write_report(many, BOTH, tmp_path, name="many", top=7)
    page = paths["html"].read_text()
    table = page.split("<h2>Trials, best first</h2>")[1].split("<h2>")[0]
    assert table.count("<tr") == 7 + 1 and "The 7 best of 120 trials; every one in many_trials.csv" in table
    best = rank_trials(many, BOTH)["trial_id"].head(7).tolist()
    assert [row.split("</td>")[0].split(">")[-1] for row in table.split("<tr")[2:]] == best  # the best, in order
    assert len(pd.read_csv(paths["trials"])) == 120
    front = pd.read_csv(paths["pareto"])
    shown = page.split("<h2>Pareto front")[1].split("<h2>")[0]
    assert f"({len(front)} trials)" in shown and shown.count("<tr class='front'>") == min(7, len(front))
    small = write_report(many.head(5), BOTH, tmp_path / "small", name="small", top=7)["html"].read_text()
    assert "best of" not in small  # all shown: no note


def recorded_language_model_sweep(tracking_uri, name, objectives):
    """A sweep as the session's MLflow server holds it whose trials and dense stage report no
    accuracy: a language model's val_loss and val_perplexity, and density."""
    import math

    from raysparse.tracking import SweepRun, TrialRun, load_sweep

    parent = SweepRun.start(tracking_uri, name, name, params={"sweep": {"objectives": objectives}})
    stage = TrialRun.open_stage(tracking_uri, parent.experiment_id, parent.run_id, run_name="pretrain",
                                params={"epochs": 3})
    stage.log_epoch({"val_loss": math.log(9.5), "val_perplexity": 9.5}, step=3)
    stage.finish()
    for trial_id, method, density, perplexity in (("t0", "dense", 1.0, 10.0), ("t1", "gmp", 0.2, 12.0),
                                                  ("t2", "gmp", 0.1, 15.0)):
        run = TrialRun.open(tracking_uri, parent.experiment_id, parent.run_id, trial_id, run_name=trial_id,
                            params={"sparsity": {"method": method}})
        run.log_epoch({"val_loss": math.log(perplexity), "val_perplexity": perplexity, "density": density}, step=3)
        run.finish()
    parent.finish()
    return load_sweep(tracking_uri, name, name)


def test_report_of_a_sweep_without_accuracy_draws_its_objectives_and_skips_prune_potential(tracking_uri, tmp_path):
    from raysparse.report import report_sweep

    data = recorded_language_model_sweep(tracking_uri, "perplexity", {"val_perplexity": "min"})
    paths = report_sweep(tracking_uri, data, tmp_path)
    page = paths["html"].read_text()
    assert "Objectives: val_perplexity (min)" in page and "potential" not in paths
    assert "Not measured: no finished trial reported test_accuracy" in page
    assert "dense stage: 3 epochs, val_perplexity 9.5000, run" in page  # its first objective, not an accuracy
    trials = page.split("<h2>Trials, best first</h2>")[1]
    assert trials.index(">t0<") < trials.index(">t1<") < trials.index(">t2<")  # lowest perplexity first
    assert pd.read_csv(paths["trials"])["trial_id"].tolist() == ["t0", "t1", "t2"]


def test_report_tolerates_an_objective_no_trial_reported(tracking_uri, tmp_path):
    from raysparse.report import report_sweep

    data = recorded_language_model_sweep(tracking_uri, "unreported", {"val_perplexity": "min", "flops_sparse": "min"})
    paths = report_sweep(tracking_uri, data, tmp_path)
    assert len(pd.read_csv(paths["pareto"])) == 0  # no trial has both objectives
    assert "<h2>Pareto front (0 trials)</h2>" in paths["html"].read_text()


def test_stage_line_shows_the_first_objective_without_an_accuracy():
    from raysparse.report import stage_line

    stage = {"params.epochs": "3", "metrics.val_perplexity": 9.5, "run_id": "r1", "status": "FINISHED"}
    objectives = [("metrics.val_perplexity", "min")]
    assert stage_line(stage, objectives) == "dense stage: 3 epochs, val_perplexity 9.5000, run r1"
    accurate = {**stage, "metrics.val_accuracy": 0.9}
    assert stage_line(accurate, objectives) == "dense stage: 3 epochs, val accuracy 0.9000, run r1"
    assert stage_line({**stage, "status": "FAILED"}) == "dense stage: 3 epochs, val accuracy -, run r1 (failed)"


def test_other_texts_say_whether_the_best_on_validation_holds_there():
    done = pd.DataFrame({
        "trial_id": ["a", "b", "c"], "params.task.name": ["causal_lm"] * 3,
        "metrics.val_perplexity": [10.0, 12.0, 14.0], "metrics.test_perplexity": [11.0, 12.5, 15.0],
        "metrics.code_perplexity": [30.0, 20.0, 40.0],  # 'a' is best on val, 'b' on code
    })
    table = other_texts(done).set_index("text")
    assert list(table.index) == ["code"]
    assert table.loc["code", "best_on_val_perplexity"] == 30.0 and table.loc["code", "best_perplexity_there"] == 20.0
    assert table.loc["code", "spearman_with_val"] == pytest.approx(0.5)
    assert other_texts(done.drop(columns="metrics.code_perplexity")) is None
