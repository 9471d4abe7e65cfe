import pandas as pd

from raysparse.report import pareto_front, rank_trials, write_report

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


def test_rank_puts_best_first_and_missing_last():
    ranked = rank_trials(TRIALS, [("metrics.val_accuracy", "max"), ("metrics.flops_sparse", "min")])
    assert list(ranked["trial_id"]) == ["d", "b", "a", "c", "e"]
    assert list(rank_trials(TRIALS, [("metrics.flops_sparse", "min")])["trial_id"])[:2] == ["e", "c"]


def test_write_report_files(tmp_path):
    paths = write_report(TRIALS, BOTH, tmp_path, name="s", best_config={"params.sparsity.method": "granet"})
    assert set(paths) == {"trials", "plot", "best", "pareto"}
    assert pd.read_csv(paths["trials"])["trial_id"].tolist() == ["d", "b", "a", "c", "e"]
    assert len(pd.read_csv(paths["pareto"])) == 3
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
