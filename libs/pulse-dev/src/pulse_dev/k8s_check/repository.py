"""The checkout under check: its root, its tools, and its charts as rendered."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import yaml

from pulse_dev.k8s_check.render import Helm, Renders
from pulse_dev.k8s_check.skaffold_render import SkaffoldRenders
from pulse_dev.k8s_check.tools import Tools, locate

if TYPE_CHECKING:
    from pathlib import Path


def repository_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` that holds charts/pulse.

    Raises FileNotFoundError when there is none.
    """
    for candidate in (start, *start.parents):
        if (candidate / "charts/pulse/Chart.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no Pulse repository (charts/pulse) at or above {start}")


@dataclass
class Repository:
    root: Path
    tools: Tools
    renders: Renders

    @classmethod
    def open(cls, root: Path) -> Repository:
        """The repository at ``root``, with helm and kubectl fetched if need be.

        Raises ToolsUnavailableError when they cannot be.
        """
        tools = locate(root)
        return cls(root=root, tools=tools, renders=Renders(Helm(tools.helm, root)))

    @cached_property
    def skaffold(self) -> SkaffoldRenders:
        """skaffold.yaml's releases, rendered per profile."""
        return SkaffoldRenders(self)

    @property
    def helm(self) -> Helm:
        return self.renders.helm

    def text(self, relative: str) -> str:
        return (self.root / relative).read_text()

    def yaml(self, relative: str) -> Any:
        return yaml.safe_load(self.text(relative))
