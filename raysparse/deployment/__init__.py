"""The deployed form of a sparse network: each layer on the fastest of dense and sparse kernels
(torch.sparse CSR / BSR, im2col + CSR convolutions), chosen by timing on this machine."""

from raysparse.deployment.model import DeployedModel
from raysparse.deployment.plan import Plan, PlanRow
from raysparse.deployment.planner import build_deployed, deploy
from raysparse.deployment.saving import load_deployed, save_deployed

__all__ = ["DeployedModel", "Plan", "PlanRow", "build_deployed", "deploy", "load_deployed", "save_deployed"]
