"""The payload's entry point: `python DIR COMMAND ...` runs the agent from DIR alone.

Python puts DIR (this file's directory) first on sys.path, so the agent's package is
imported from the payload and nothing from the current directory. The launcher (see
leptonctl/remote/agent.py) checks the cache directory's owner and mode first; the
forced command of a transfer key runs this file directly.
"""

import sys

from lepton_agent.cli import main

sys.exit(main())
