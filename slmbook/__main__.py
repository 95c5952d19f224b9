"""``python -m slmbook``: the same as the ``slmbook`` command (see :mod:`slmbook.cli`)."""

import sys

from slmbook.cli import main

sys.exit(main())
