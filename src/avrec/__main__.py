"""``python -m avrec``: the command line (the server's retraining runs it as a child)."""

from avrec.cli.main import main

main()
