"""``python -m neural_memory`` is the same as the ``neural-memory`` console script."""

from neural_memory.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
