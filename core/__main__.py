"""``python -m core``: an alias of the command line, which lives in workflows/cli/."""
from workflows.cli import main

raise SystemExit(main())
