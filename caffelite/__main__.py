"""``python -m caffelite``: the same as the ``caffelite`` command."""

import sys

from caffelite.cli import main

sys.exit(main())
