"""The release policy shared by every target: strategies as data, one interpreter.

:mod:`shiplift.rollout.steps` turns an environment's strategy into a list of steps;
:mod:`shiplift.rollout.engine` runs that list from the ledger's step index. Neither imports
Prefect, Docker or a target: the flows give the engine its ports.
"""

from shiplift.rollout.engine import Ports, Rollout, abandon, check_router
from shiplift.rollout.steps import Step, plan

__all__ = ["Ports", "Rollout", "Step", "abandon", "check_router", "plan"]
