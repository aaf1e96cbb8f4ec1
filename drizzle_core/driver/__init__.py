"""Driver: the planner, the group scheduler, adaptive group size, traces and the transport plugin loader."""

from ._adaptive import AIMD
from ._plan import GroupPlan, Planner
from ._plugins import CommandInfo, TransportInfo, commands, get_transport, register_builtin, transports
from ._scheduler import GroupMetrics, GroupScheduler, JobIterator
from ._trace import Trace

__all__ = ["AIMD", "CommandInfo", "GroupMetrics", "GroupPlan", "GroupScheduler", "JobIterator", "Planner",
           "Trace", "TransportInfo", "commands", "get_transport", "register_builtin", "transports"]
