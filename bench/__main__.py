"""Run one benchmark: python -m bench restart [--queued N] [--retained N]."""

from __future__ import annotations

import argparse
import sys

from bench import restart

BENCHES = {"restart": restart}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHES))
    args, rest = parser.parse_known_args()
    return BENCHES[args.name].main(rest)


if __name__ == "__main__":
    sys.exit(main())
