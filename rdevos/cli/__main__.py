"""``python -m rdevos.cli``."""

import sys

from rdevos.cli import main

sys.exit(main())
