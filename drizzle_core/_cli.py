"""``python -m drizzle_core._cli`` and the ``drizzle`` console script (the command lives in :mod:`drizzle_core.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
