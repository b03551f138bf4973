"""`python -m vae_zoo ...`: the `vae-zoo` command line."""

import sys

from vae_zoo.drivers.cli import main

sys.exit(main())
