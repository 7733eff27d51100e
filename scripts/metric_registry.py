"""Import every module of libs/pulse and the services, so that every Prometheus metric the
code defines is registered in prometheus_client's default REGISTRY (for k8s-check.sh's
metric checks). Run from the repository root with the project's venv."""

from __future__ import annotations

import importlib
import pathlib
import pkgutil

from prometheus_client import REGISTRY

__all__ = ["REGISTRY", "load_every_metric"]


def load_every_metric(root: pathlib.Path = pathlib.Path()) -> None:
    packages = [("pulse", root / "libs/pulse/src/pulse")] + [
        (d.name, d)
        for s in sorted((root / "services").iterdir())
        if (s / "src").is_dir()
        for d in (s / "src").iterdir()
        if (d / "__init__.py").exists()
    ]
    for name, path in packages:
        importlib.import_module(name)
        for module in pkgutil.walk_packages([str(path)], prefix=f"{name}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
