"""``python -m livelearn`` and the ``livelearn`` command's entry point.

The command's modules are imported here, inside a ``try``: a Ctrl-C in the moment
after ``livelearn`` is typed (importing them takes a few tenths of a second) ends
the command quietly with 130, as a Ctrl-C a moment later does, not with a
KeyboardInterrupt traceback.
"""

import sys


def main() -> int:
    try:
        from livelearn.cli import main as command
    except KeyboardInterrupt:
        return 130
    return command()


if __name__ == "__main__":
    sys.exit(main())
