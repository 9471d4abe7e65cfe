"""The driver's callbacks on a real Tune run: a trial that dies before it opens its MLflow run still
gets one, FAILED with its reason, and counts in the summary."""

from ray import tune

from raysparse.search.progress import TrialRunCloser
from raysparse.search.spaces import load_sweep
from raysparse.tracking import SweepRun, ensure_local_server
from tests.search.conftest import tiny_sweep


def dies_at_start_up(params):
    raise OSError("no such file: /data/on/another/node")


def test_a_trial_that_fails_before_its_run_opens_gets_a_failed_run(ray_runtime, home, tmp_path):
    sweep = load_sweep(tiny_sweep("early", num_samples=1))
    parent = SweepRun.start(ensure_local_server(home), "early", "early", params={})
    tuner = tune.Tuner(
        dies_at_start_up, param_space={"sparsity.final_sparsity": 0.7},
        run_config=tune.RunConfig(name="early", storage_path=str(tmp_path), verbose=0,
                                  callbacks=[TrialRunCloser(parent, sweep)],
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    (result,) = tuner.fit()
    assert isinstance(result.error, Exception)
    (child,) = parent.child_runs()
    assert child.status == "FAILED" and child.trial_id is not None
    run = parent._client.get_run(child.run_id)
    assert run.data.tags["raysparse.failure_reason"].startswith("OSError: no such file: /data/on/another/node")
    assert run.data.params["sparsity.final_sparsity"] == "0.7"  # the config it was given, sampled value in


def test_only_errors_a_retry_cannot_change_skip_retries():
    from raysparse.errors import ConfigError
    from raysparse.search.trial import is_retryable
    from raysparse.train.loop import TrainingDiverged

    assert is_retryable(ValueError("x")) and is_retryable(OSError("lost node"))  # ConfigError is a ValueError
    assert not is_retryable(ConfigError("model.name", "unknown")) and not is_retryable(TrainingDiverged("nan"))
