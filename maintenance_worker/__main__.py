"""``python -m maintenance_worker worker|beat|inspect ...``: the Celery command line on Parley's
maintenance app, built from the environment's settings when the command starts."""

from __future__ import annotations

import sys

from maintenance_worker.app import create_app


def main(argv: list[str] | None = None) -> int:
    code = create_app().start(list(sys.argv[1:] if argv is None else argv))
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
