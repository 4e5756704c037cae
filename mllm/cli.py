"""`mllm <verb>`: one entry point; each verb lives in `mllm.commands.<verb>`.

A verb module defines `add_arguments(parser)` and `run(args)`; its docstring's first line is
the verb's help. Verb modules are imported lazily so `mllm --help` stays fast. A `UsageError`
(a bad flag, path or record) is printed as one line, `mllm <verb>: error: ...`, with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mllm.errors import UsageError

VERBS = {
    "train": "train",
    "caption": "caption",
    "check-data": "check_data",
    "convert-data": "convert_data",
    "scenes": "scenes",
    "eval": "eval",
    "quickstart": "quickstart",
    "recaption": "recaption",
    "blend": "blend",
    "report": "report",
    "export": "export",
}


def _verb_module(verb: str):
    return importlib.import_module(f"mllm.commands.{VERBS[verb]}")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERBS:
        if verb is not None and name != verb:
            sub.add_parser(name)
            continue
        module = _verb_module(name)
        help_line = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        p = sub.add_parser(name, help=help_line, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in VERBS else None
    parser = build_parser(verb)
    if verb is None:
        if argv and argv[0] not in ("-h", "--help"):
            parser.parse_args(argv)  # exits with "invalid choice" and the list of verbs
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv)
    # Warnings from every library; mllm's own notes too (such as the precision it chose, and why).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mllm").setLevel(logging.INFO)
    try:
        return int(_verb_module(verb).run(args) or 0)
    except UsageError as error:
        print(f"mllm {verb}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
