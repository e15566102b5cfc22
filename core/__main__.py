"""``python -m core``: an alias of the command line, which lives in workflows/cli.py."""
from workflows.cli import main

raise SystemExit(main())
