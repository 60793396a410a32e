"""``python -m amber convert IN OUT [--compress CODEC[:LEVEL]] [--check] [--trusted]``.

The Rust ``amber`` CLI runs this for ``amber convert``: converting means
unpickling, which only Python can do.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _compress(text: str | None) -> Any:
    if text is None:
        return None
    name, _, level = text.partition(":")
    if name.isdigit() and not level:
        return int(name)
    if not level:
        return name
    if not level.isdigit():
        raise SystemExit(f"amber convert: bad --compress {text!r}: LEVEL must be an integer")
    return (name, int(level))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="amber", description="amber's Python-side commands")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert",
        help="convert a pickle or joblib file (any version) to an amber file",
        description="Open IN (a pickle, a joblib file of any version or an amber file, detected by "
        "content) and write its object to OUT as an amber file (or, for OUT ending in .joblib/.pkl, "
        "a joblib file, if joblib is installed).",
    )
    convert.add_argument("input", metavar="IN")
    convert.add_argument("output", metavar="OUT")
    convert.add_argument("--compress", metavar="CODEC[:LEVEL]", help="zstd, lz4, an int 1-9, or CODEC:LEVEL")
    convert.add_argument("--check", action="store_true", help="load both files again and compare them")
    convert.add_argument("--trusted", action="store_true", help="skip the safety policy (only for files you trust)")
    args = parser.parse_args(argv)

    import amber

    try:
        written = amber.convert(
            args.input,
            args.output,
            trusted=True if args.trusted else None,
            check=args.check,
            compress=_compress(args.compress),
        )
    except (amber.AmberError, OSError, ValueError) as e:
        code = getattr(e, "code", None)
        print(f"amber convert: {type(e).__name__}{f' [{code}]' if code else ''}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {written}" + (" (checked: loads equal to the original)" if args.check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
