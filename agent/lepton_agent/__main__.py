"""`python -m lepton_agent COMMAND ...` (with the payload directory on sys.path)."""

import sys

from .cli import main

sys.exit(main())
