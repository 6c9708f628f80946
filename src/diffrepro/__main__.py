"""`python -m diffrepro` = the `diffrepro` command."""
import sys

from .cli import main

sys.exit(main())
