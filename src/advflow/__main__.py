"""``python -m advflow``: the command line (:mod:`advflow.cli`)."""

from advflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
