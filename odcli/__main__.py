"""``python -m odcli …`` is ``odet …`` (used with ``torchrun -m odcli``)."""

from odcli.cli.main import main

main()
