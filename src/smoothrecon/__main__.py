"""`python -m smoothrecon` (also what torchrun launches)."""

from smoothrecon.cli.main import main

raise SystemExit(main())
