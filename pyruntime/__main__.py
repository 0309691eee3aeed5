"""python -m pyruntime info: the CPU, its usable flags, the selected and available paths."""
from __future__ import annotations

import argparse
import sys


def _info() -> int:
    import pyruntime

    info = pyruntime.cpu_info()
    print(f"CPU        {info['vendor']} {info['model']}")
    print(f"cores      {info['cores']} usable by this process")
    print(f"flags      {' '.join(info['flags'])}")
    print(f"available  {', '.join(info['available'])}")
    print(f"selected   {info['isa']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyruntime")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the CPU, its flags and the ISA paths")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    return 2


if __name__ == "__main__":
    sys.exit(main())
