"""The group's program: what its tasks execute, pickled once per group by the driver."""

from __future__ import annotations

from typing import Any


class Program:
    """What a group's tasks execute: flat ``{node_id: node}`` and ``{func_id: func}``."""

    __slots__ = ("funcs", "nodes")

    def __init__(self, nodes: dict[Any, Any], funcs: dict[Any, Any]) -> None:
        self.nodes = nodes
        self.funcs = funcs

    def __reduce__(self) -> tuple[type[Program], tuple[dict[Any, Any], dict[Any, Any]]]:
        return (Program, (self.nodes, self.funcs))
