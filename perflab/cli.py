"""The ``perflab`` command: ``gen-data``, ``report`` and ``compare``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _gen_data(args: argparse.Namespace) -> int:
    from perflab.workloads import write_dataset

    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"perflab gen-data: directory {str(out.parent)!r} does not exist", file=sys.stderr)
        return 2
    written = write_dataset(out, args.records, seed=args.seed, progress=not args.quiet)
    print(f"wrote {args.records:,} records, {written:,} bytes to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perflab", description="A performance workbench for asyncio collectors."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("gen-data", help="write the realistic market-data JSONL data set")
    gen.add_argument("--records", type=_positive_int, required=True, help="how many records")
    gen.add_argument("--out", required=True, help="output path; .gz or .zst compresses")
    gen.add_argument("--seed", type=_positive_int, default=0, help="random seed (default 0)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(run=_gen_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
