"""`python -m npnorm.bench` runs the same benchmark as `npnorm bench`."""

import sys

from .cli import main

sys.exit(main())
