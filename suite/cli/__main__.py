"""``python -m suite.cli``: the ``suite`` command."""

import sys

from suite.cli.main import main

sys.exit(main())
