"""``python -m batch_updater``."""

from .cli import main

raise SystemExit(main())
