"""`python -m classifr` runs the CLI."""

import sys

from classifr.cli import main

sys.exit(main())
