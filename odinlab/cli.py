"""The `odinlab` command line: `odinlab demo [--store DIR]`, `odinlab info STORE`, `odinlab verify STORE`,
`odinlab report STORE MODEL... -o FILE`."""

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
    check = commands.add_parser("verify", help="check every chunk, table and weights file; exit 1 if any is damaged")
    check.add_argument("store", help="folder or fsspec URL of a store")
    _add_report_parser(commands)
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            return report(args)
        if args.command == "demo":
            from odinlab.demo import run_demo

            run_demo(args.store)
        elif args.command == "verify":
            return verify(args.store)
        else:
            import odinlab

            print(json.dumps(odinlab.open_store(args.store, mode="r").summary(), indent=2))
    except OdinError as error:
        print(f"odinlab: error: {error}", file=sys.stderr)
        return 2
    return 0


def verify(path: str) -> int:
    """Print the store's problems, one per line; return 1 when there are any, else 0.

    >>> verify(store.url)
    The store at 'memory://...' is healthy: every chunk, table and weights file checked.
    0
    """
    import odinlab
    from odinlab.store.verify import verify as check

    problems = check(odinlab.open_store(path, mode="r"))
    if problems.is_empty():
        print(f"The store at {path!r} is healthy: every chunk, table and weights file checked.")
        return 0
    for what, where, images, error in problems.iter_rows():
        affected = f" (images: {', '.join(images[:10])}{', …' if len(images) > 10 else ''})" if images else ""
        print(f"{what} {where}: {error}{affected}")
    print(f"{problems.height} problems in the store at {path!r}.", file=sys.stderr)
    return 1


def _add_report_parser(commands) -> None:
    report = commands.add_parser("report", help="write a standalone HTML report of one model, or two compared")
    report.add_argument("store", help="folder or fsspec URL of a store")
    report.add_argument("models", nargs="+", metavar="MODEL", help="model version(s): name@N or name (1 or 2)")
    report.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default report.html)")
    report.add_argument("--images", default="test", help="image selection: a split, SQL... (default test)")
    report.add_argument("--title", default=None, help="the report's title")
    report.add_argument("--layer", default=None, help="layer of the error clusters and the embedding")
    report.add_argument("--net", default=None, metavar="MODULE:CALLABLE",
                        help="the network's code, e.g. odinlab.nets:SmallCNN, called with no arguments and given "
                             "each model's weights: attribution overlays and unit maximizations need it")


def report(args) -> int:
    """``odinlab report STORE MODEL... -o FILE``: write the report, print its path and size; 0 when written.

    >>> import tempfile
    >>> _ = store.materialize(net, ["head.fc1", "features.relu2"], "test", progress=False)
    >>> out = tempfile.mkdtemp() + "/r.html"
    >>> main(["report", store.url, "cnn@1", "-o", out, "--title", "Digits"])  # doctest: +ELLIPSIS
    Wrote .../r.html (... MB)
    0
    """
    import importlib

    import odinlab
    from odinlab.reports import report as write

    store = odinlab.open_store(args.store)
    if args.net:
        where, _, name = args.net.partition(":")
        try:
            factory = getattr(importlib.import_module(where), name)
        except (ImportError, AttributeError, ValueError) as error:
            print(f"odinlab: error: cannot import --net {args.net!r} ({error}); give MODULE:CALLABLE.",
                  file=sys.stderr)
            return 2
        for model in args.models:
            store.load_weights(factory(), model)
    path = write(store, args.models, args.output, images=args.images, title=args.title, layer=args.layer)
    print(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
