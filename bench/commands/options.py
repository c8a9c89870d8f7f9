"""Options that several commands share, and the argparse pieces every command's parser is built with.

A command module (``bench.commands.<name>``) adds its own options in ``add_parser`` with these
helpers; the types here turn a bad value into one line and exit 2 (argparse's ``error``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

METRIC_GROUPS = ("params", "flops", "latency", "speedup", "stream", "pose_error", "memory", "train", "breakdown",
                 "flops_train")


# Placeholders of a help text that name what a registry holds when the help is printed (built-ins and
# plugins loaded so far): the parser is built before --plugin is read, so the lists cannot be fixed then.
REGISTRY_PLACEHOLDERS = ("{pruners}", "{recoverers}")


def registry_text(text: str) -> str:
    """``text`` with ``{pruners}`` and ``{recoverers}`` replaced by the registered names (``tps | tpc | ...``)."""
    if not any(p in text for p in REGISTRY_PLACEHOLDERS):
        return text
    import backbones  # only when such a help is printed: it imports torch

    return text.replace("{pruners}", " | ".join(backbones.pruners())).replace(
        "{recoverers}", " | ".join(backbones.recoverers()))  # fmt: skip


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says what it is (or it is an off switch), and
    fills in the registries' names (:data:`REGISTRY_PLACEHOLDERS`) as they are when the help is printed."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = registry_text(action.help or "")
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class _HelpWithPlugins(argparse.Action):
    """``-h``: imports the plugins first (``--plugin`` given before it, ``VPTBENCH_PLUGINS``, entry points),
    so that the pruners and recoverers they register are listed."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, *_args: Any, **_kw: Any) -> None:
        from ..core.errors import UsageError
        from ..core.plugins import load

        try:
            load(getattr(namespace, "plugin", None) or [])
        except UsageError as e:
            parser.error(str(e))
        parser.print_help()
        parser.exit()


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump) and exits 2.

    Arguments that no option of a command takes are reported by that command's parser
    (``vptbench compare: error: unrecognized arguments: --metric latncy``), not by the top-level one,
    so that the line names the command whose options to check.
    """

    def __init__(self, *, add_help: bool = True, **kw: Any) -> None:
        super().__init__(add_help=False, **kw)
        if add_help:
            self.add_argument("-h", "--help", action=_HelpWithPlugins, help="show this help message and exit")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        ns, extras = self.parse_known_args(argv, namespace)
        if extras:
            self._owner(argv, ns, extras[0]).error(f"unrecognized arguments: {' '.join(extras)}")
        return ns

    def _owner(self, argv: list[str], ns: Any, extra: str) -> argparse.ArgumentParser:
        """The parser of the command whose arguments ``extra`` stands among (this one if it comes before it)."""
        command = getattr(ns, "command", None)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                at = argv.index(command) if command in argv else len(argv)
                if extra not in argv[:at]:
                    return action.choices[command]
        return self


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def metric_list(text: str) -> list[str]:
    items = csv_list(text)
    bad = [m for m in items if m not in METRIC_GROUPS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown metric {bad[0]!r}; choose from {', '.join(METRIC_GROUPS)}")
    return items


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text!r}")
    return value


def min_time_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-time", type=seconds, default=None, metavar="SECONDS",
                   help="time each timed metric (latency, speedup, train_step) at least this long, and allow "
                        "up to 3x as long to tighten its confidence interval (default: the preset's)")


def allocator_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allocator", default=None, metavar="NAME",
                   help="how the measuring processes allocate memory: tuned (glibc with no per-forward page "
                        "faults), system, tcmalloc, jemalloc (preloaded; local and slurm executors) "
                        "(default: the preset's, tuned)")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # bench.core.case.PRECISIONS, without importing torch here


def precision_list(text: str) -> list[str]:
    items = csv_list(text)
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown precision {bad[0] if bad else text!r}; choose from {', '.join(PRECISIONS)}")
    return items


def precision_options(p: argparse.ArgumentParser, *, checkpoint: bool = True) -> None:
    """``--precision`` (a matrix axis) and what the pose error of its cases is measured with."""
    p.add_argument("--precision", type=precision_list, default=None, metavar="P,...",
                   help="inference precisions, a comma list of fp32 (default), fp16, bf16, int8 (int8: dynamic "
                        "quantization of the linear layers); a case a device cannot run is skipped with the reason")
    if checkpoint:
        p.add_argument("--checkpoint", default=None, metavar="FILE",
                       help="pose_error: the weights of this trained checkpoint (vptbench or a release's) for the "
                            "cases of its backbone, T and size (default: a short synthetic training)")
    p.add_argument("--pose-steps", type=int, default=None, metavar="N",
                   help="pose_error: steps of the synthetic training where no checkpoint fits (default: 30)")


def strategy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pruners", type=csv_list, default=None, metavar="P,...",
                   help="pruned variants once per pruner, a comma list of {pruners} (default: each variant's own)")
    p.add_argument("--recoverers", type=csv_list, default=None, metavar="R,...",
                   help="pruned seq2seq variants once per recoverer, a comma list of {recoverers} "
                        "(default: each variant's own)")


def executor_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=("inline", "local", "slurm"), default=None,
                   help="inline: this process; local: a fresh process per case; slurm: a submitit job array (default: local)")
    g.add_argument("--workers", type=int, default=None,
                   help="local executor: cases run at once (default: 1 for run, so timings do not disturb each "
                        "other; one per CPU core for accuracy on the CPU)")
    g.add_argument("--shard", default=None, metavar="i/n", help="run only the i-th of n deterministic slices (default: all)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out: its own matrix (from meta.json) unless matrix options are given; "
                        "cases already finished with whole records are skipped")  # fmt: skip
    g.add_argument("--slurm-partition", default=None, help="Slurm partition (default: the cluster's default)")
    g.add_argument("--slurm-time", type=int, default=60, metavar="MINUTES", help="time limit per job")
    g.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job")
    g.add_argument("--slurm-cpus", type=int, default=None,
                   help="CPU cores per job (default: the case's threads; for a timing run without a thread "
                        "count a whole node's cores; otherwise up to 4)")
    g.add_argument("--slurm-mem", type=int, default=None, metavar="GB",
                   help="memory per job (default: what the case needs, from a table of measured peaks, 2 GB at least)")
    g.add_argument("--slurm-exclusive", action=argparse.BooleanOptionalAction, default=None,
                   help="give each job a whole node (default: yes for timing runs, i.e. latency, speedup, train "
                        "or breakdown, so that no other job disturbs the timings; no otherwise)")
    g.add_argument("--detach", action="store_true",
                   help="slurm: stopping this command (Ctrl-C, SIGTERM) leaves the jobs running instead of "
                        "cancelling them; continue later with --resume")
    g.add_argument("--slurm-account", default=None, help="Slurm account to charge (default: yours)")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option, repeatable (e.g. --slurm-extra constraint=a100)")
    g.add_argument("--slurm-folder", default=None, help="where submitit writes job logs (default: <out>/slurm)")


def checkpoint_options(p: argparse.ArgumentParser, help_checkpoint: str) -> None:
    p.add_argument("--checkpoint", default=None, help=help_checkpoint)
    p.add_argument("--source", choices=("hot", "original"), default=None,
                   help="for a release's checkpoint: hot (NationalGAILab/HoT's copies) or original (the "
                        "backbone's own release); needed only where the tensors cannot tell (MotionAGFormer-B)")
