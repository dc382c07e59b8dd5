"""`python -m smoothrecon` (also what torchrun launches)."""

from smoothrecon.cli import main

raise SystemExit(main())
