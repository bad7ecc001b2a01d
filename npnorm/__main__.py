"""`python -m npnorm` runs the same command-line tool as `npnorm`."""

import sys

from .cli import main

sys.exit(main())
