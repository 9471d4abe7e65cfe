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
                                  callbacks=[TrialRunCloser(parent, sweep, tmp_path)],
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


def runs_out_of_memory(params):
    import os
    import signal

    if params["how"] == "allocation":
        bytearray(1 << 50)  # a petabyte: the allocation fails, as a too large model's does
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does to a process


def test_a_trial_that_runs_out_of_memory_fails_with_a_reason_in_words(ray_runtime, home, tmp_path):
    sweep = load_sweep(tiny_sweep("oom", num_samples=2))
    parent = SweepRun.start(ensure_local_server(home), "oom", "oom", params={})
    tuner = tune.Tuner(
        runs_out_of_memory, param_space={"how": tune.grid_search(["allocation", "killed"])},
        run_config=tune.RunConfig(name="oom", storage_path=str(tmp_path), verbose=0,
                                  callbacks=[TrialRunCloser(parent, sweep, tmp_path)],
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    assert all(result.error is not None for result in tuner.fit())
    children = parent.child_runs()
    assert [child.status for child in children] == ["FAILED", "FAILED"]
    allocation, killed = sorted((parent._client.get_run(c.run_id).data.tags["raysparse.failure_reason"]
                                 for c in children), key=lambda reason: not reason.startswith("out of memory"))
    assert allocation.startswith("out of memory: the trial's process could not allocate memory (MemoryError); "
                                 "train a smaller model or batch")
    assert killed.startswith("the trial's process died without a Python error (killed by a signal: most often "
                             "the kernel's OOM killer")
