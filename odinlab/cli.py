"""The `odinlab` command line: `odinlab demo [--store DIR]`, `odinlab info STORE`."""

from __future__ import annotations

import argparse
import json
import sys

from odinlab.errors import OdinError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``odinlab`` command.

    >>> main(["info", "memory://no-store-here"])
    2
    """
    from odinlab import __version__

    parser = argparse.ArgumentParser(prog="odinlab", description="Debug image classifiers with a store that remembers.")
    parser.add_argument("--version", action="version", version=f"odinlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="build a demo store from scikit-learn's digits and summarize it")
    demo.add_argument("--store", default="odinlab-demo-store", help="folder of the demo store (replaced if it holds one)")
    info = commands.add_parser("info", help="print a store's summary")
    info.add_argument("store", help="folder or fsspec URL of a store")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from odinlab.demo import run_demo

            run_demo(args.store)
        else:
            import odinlab

            print(json.dumps(odinlab.open_store(args.store, mode="r").summary(), indent=2))
    except OdinError as error:
        print(f"odinlab: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
