"""``python -m pulse.cli``: the ``pulse`` command."""

from pulse.cli import main

main()
