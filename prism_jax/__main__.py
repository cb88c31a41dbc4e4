import sys

from prism_jax.cli import main

sys.exit(main())
