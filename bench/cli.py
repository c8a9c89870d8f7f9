"""The command line: argparse subcommands that only parse and call library functions (SPEC section 7).

Exit codes: 0 all ok, 1 a case failed (run, accuracy) or a regression (gate), 2 bad input (a user
mistake, one line on stderr; also a run directory that cannot be written).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from .commands.options import Help, Parser
from .core.errors import UsageError

# The commands in the order `vptbench --help` lists them; each is the module bench.commands.<name>,
# which adds its options (``add_parser``) and runs it (``main``, importing the library only then,
# so that --help and a mistake in the options answer at once).
COMMANDS = ("list", "profile", "stream", "run", "accuracy", "convert", "sweep", "report", "gate", "merge", "compare",
            "doctor", "history", "export")


def versions() -> str:
    """The versions a result depends on: this package, torch and fvcore (installed or not)."""
    from importlib import metadata

    from . import __version__

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"vptbench {__version__}\ntorch {version('torch')}\nfvcore {version('fvcore')}"


class _Versions(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kw: Any) -> None:
        print(versions())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vptbench", description="Efficiency benchmarks of video pose transformers and their token-pruned variants.")
    parser.add_argument("--version", action=_Versions, nargs=0, help="print the versions of vptbench, torch and fvcore")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    # Every option shows its default in --help.
    sub_kw: dict[str, Any] = {"formatter_class": Help}

    for name in COMMANDS:
        importlib.import_module(f"bench.commands.{name}").add_parser(sub, **sub_kw)
    for command in sub.choices.values():  # every command, those added later too
        command.add_argument(
            "--plugin", action="append", default=[], metavar="MODULE",
            help="import MODULE (a module name or a .py file) first, here and in every worker: it may register "
                 "backbones, pruners and recoverers; repeatable (also VPTBENCH_PLUGINS and the vptbench.plugins "
                 "entry points)",
        )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .core.plugins import load

        load(getattr(args, "plugin", None) or [])
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"vptbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vptbench: interrupted; records written so far are kept (use --resume)", file=sys.stderr)
        return 130
