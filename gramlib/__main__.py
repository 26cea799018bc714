"""Command line of gramlib: ``python -m gramlib student ...`` (or the ``gramlib`` script).

Subcommands:

``student``  write student copies of chapter notebooks (see :mod:`gramlib.student`).
"""

from __future__ import annotations

import sys


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["student"]:
        from gramlib import student

        student.main(argv[1:])
    else:
        sys.exit(__doc__.strip())


if __name__ == "__main__":
    main()
