"""``python -m maelab`` is the ``maelab`` command."""

import sys

from maelab.cli import main

sys.exit(main())
