"""``python -m keyservice`` is the ``keyservice`` command."""
from keyservice.cli import main

raise SystemExit(main())
