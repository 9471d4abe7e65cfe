"""A training loop of the user's in a sweep: ``raysparse.sweep(space, loop=fn)`` calls ``fn(trial)``
in each trial's process, where ``trial`` is a ``LoopTrial``:

    def fn(trial):
        model = Net(width=trial.config["model"]["width"])
        optimizer = torch.optim.SGD(model.parameters(), lr=trial.config["optimizer"]["lr"])
        sparsifier = trial.sparsifier(model, optimizer, steps_per_epoch=len(loader))
        start = 0
        if (state := trial.restore()) is not None:  # a retried trial: its last checkpoint
            model.load_state_dict(state["model"]); optimizer.load_state_dict(state["optimizer"])
            start = state["epoch"]
        for epoch in range(start, trial.config["epochs"]):
            ...  # your steps, with sparsifier.step() after each optimizer.step()
            trial.report({"val_accuracy": accuracy}, checkpoint={"model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "epoch": epoch + 1})

Each report reaches Tune (objectives, ASHA) and the trial's MLflow run with the masks and their
lineage, as a built-in trial's epochs do; the run ends with the final masks and model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from raysparse.config import load_config
from raysparse.train.checkpoint import load_checkpoint, save_checkpoint, state_hash
from raysparse.train.loop import EpochContext
from raysparse.train.sparsifier import Sparsifier
from raysparse.zoo.user_code import describe


class LoopTrial:
    """What a loop of yours gets: ``config``, ``sparsifier(...)``, ``report(...)``, ``restore()``."""

    def __init__(self, config: dict, objectives: list[str], report: Callable, restored: dict | None):
        settings = load_config(config)  # a bad combination of sampled values fails here, not in your loop
        self.config: dict = settings.to_dict()  # the sampled config, every default filled in
        self._epochs, self._seed = settings.epochs, settings.seed
        self._objectives, self._report, self._restored = objectives, report, restored
        self._sparsifier: Sparsifier | None = None
        self.reports = restored["reports"] if restored is not None else 0
        self.reported_here = 0  # by this attempt (a retry continues the count)

    def sparsifier(self, model, optimizer, *, steps_per_epoch: int, **options) -> Sparsifier:
        """The trial's Sparsifier over the config's ``sparsity`` block and ``epochs``; in a retried
        trial it holds the masks and step count of the last checkpoint, so load your model's
        state from ``restore()`` after this call (a method's initial masks zero weights).
        ``options``: those of ``Sparsifier`` (``train_batches``, ``loss_fn``, ``input_shape``)."""
        if self._sparsifier is not None:
            raise RuntimeError("trial.sparsifier: a trial has one; its masks are what the run logs")
        sparsifier = Sparsifier(model, optimizer, self.config["sparsity"], steps_per_epoch=steps_per_epoch,
                                epochs=self._epochs, seed=self._seed, **options)
        if self._restored is not None:
            sparsifier.load_state_dict(self._restored["sparsifier"])
            sparsifier.masks.drain_events()  # logged by the attempt that wrote the checkpoint
            sparsifier.masks.mark(step=sparsifier.steps, reason=f"resume at report {self.reports}")
        self._sparsifier = sparsifier
        return sparsifier

    def restore(self):
        """The ``checkpoint`` of the last report that passed one, to a retried trial; else None."""
        return None if self._restored is None else self._restored["state"]

    def report(self, metrics: Mapping, checkpoint=None) -> None:
        """Report ``metrics`` (numbers, or dicts of numbers); ``epoch`` (default: reports so far),
        ``density`` and ``layer_density`` are added unless given. ``checkpoint`` (tensors,
        state_dicts, plain values: what ``torch.load(weights_only=True)`` reads) is saved with the
        sparsifier's state for ``restore()`` in a retried trial."""
        sparsifier = self._sparsifier
        if sparsifier is None:
            raise RuntimeError("trial.report: call trial.sparsifier(model, optimizer, steps_per_epoch=...) first; "
                               "its masks and model are what the run logs (a dense baseline: sparsity.method dense)")
        self.reports += 1
        self.reported_here += 1
        reports = self.reports
        metrics = {"epoch": reports, "density": sparsifier.density, "layer_density": sparsifier.layer_density(),
                   **metrics}
        missing = [m for m in self._objectives if m not in metrics]
        if missing:
            raise ValueError(f"trial.report: no {missing[0]!r} in the metrics; the sweep's objectives are "
                             f"{', '.join(self._objectives)}")
        context = EpochContext(
            mask_events=sparsifier.masks.drain_events(), masks=sparsifier.masks, model=sparsifier.model,
            save_checkpoint=lambda directory: self._save(directory, checkpoint, reports, metrics),
            export_model=sparsifier.export, example_input=sparsifier.example_input,
            data_info={"input_shape": sparsifier.input_shape} if sparsifier.input_shape is not None else {},
        )
        self._report(metrics, context, checkpoint is not None)

    def _save(self, directory: str | Path, state, reports: int, metrics: dict) -> None:
        sparsifier = self._sparsifier
        save_checkpoint(directory, {"state": state, "sparsifier": sparsifier.state_dict(), "reports": reports,
                                    "metrics": metrics})
        # the lineage row says which masks and weights a retry continues from
        sparsifier.masks.mark(step=sparsifier.steps, reason=f"checkpoint at report {reports}",
                              weights_hash=state_hash(sparsifier.model.state_dict()))


def run_loop(loop: Callable, config: dict, objectives: list[str], report: Callable,
             resume_from: str | Path | None) -> None:
    """``loop(trial)``; ``report(metrics, context, checkpoint_now)`` receives its reports."""
    trial = LoopTrial(config, objectives, report, load_checkpoint(resume_from) if resume_from else None)
    loop(trial)
    restored = trial._restored
    if trial.reported_here == 0 and restored is not None and "metrics" in restored and trial._sparsifier is not None:
        # a retry of a trial whose checkpoint holds its last report (its final upload failed, say):
        # nothing is left to train, so the run finishes from that report, not as a loop that never reported
        trial.reports -= 1  # the same report again, not one more
        trial.report({k: v for k, v in restored["metrics"].items() if k != "epoch"} | {"epoch": restored["reports"]})
        return
    if trial.reported_here == 0:
        raise RuntimeError(f"loop {describe(loop)} returned without calling trial.report(...); a trial reports "
                           f"its objective {objectives[0]!r} at least once")
