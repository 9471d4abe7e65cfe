"""``sampler: grid``: every combination of a sweep's choices, each trained once, in file order.

A Tune Searcher rather than Tune's own grid_search: the points are the sweep's dotted keys with
inactive ``when`` keys left out, which Tune's variant generator cannot express.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.search import Searcher


class GridSearcher(Searcher):
    def __init__(self, points: list[dict], metric: str | list[str], mode: str | list[str]):
        # Tune's Searcher takes one metric/mode; a grid ignores them, the first objective is enough
        super().__init__(metric=metric if isinstance(metric, str) else metric[0],
                         mode=mode if isinstance(mode, str) else mode[0])
        self.points, self.next_index = list(points), 0

    def suggest(self, trial_id: str) -> dict | str:
        if self.next_index >= len(self.points):
            return Searcher.FINISHED
        point = self.points[self.next_index]
        self.next_index += 1
        return dict(point)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # a grid does not learn from results

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"points": self.points, "next_index": self.next_index}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.points, self.next_index = state["points"], state["next_index"]
