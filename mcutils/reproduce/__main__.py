"""``python -m mcutils.reproduce``: see :mod:`mcutils.reproduce.cli`."""
import sys

from .cli import main

sys.exit(main())
