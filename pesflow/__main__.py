"""``python -m pesflow``: the ``pesflow`` command line."""

from pesflow.cli import main

if __name__ == "__main__":
    main()
