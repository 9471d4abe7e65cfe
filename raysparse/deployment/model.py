"""The deployed network: a module that runs ``network`` and carries the plan that built it."""

from __future__ import annotations

from torch import nn

from raysparse.deployment.plan import Plan, PlanRow


class DeployedModel(nn.Module):
    """``network`` with its layers on the chosen kernels; ``plan`` says which and why. Saved and
    loaded as data (weights, plan, the model's spec) by ``raysparse.deployment.saving``."""

    def __init__(self, network: nn.Module, plan: Plan):
        super().__init__()
        self.network = network
        self.plan_rows = [(r.layer, list(r.shape), r.density, r.kernel, dict(r.timings)) for r in plan]
        self.plan_summary = {"batch_size": plan.batch_size, "network_ms": dict(plan.network_ms),
                             "reverted": plan.reverted}

    @property
    def plan(self) -> Plan:
        rows = [PlanRow(layer, tuple(shape), density, kernel, timings)
                for layer, shape, density, kernel, timings in self.plan_rows]
        return Plan(rows, **self.plan_summary)

    def forward(self, *args, **kwargs):
        return self.network(*args, **kwargs)
