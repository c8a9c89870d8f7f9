"""The command line: argparse subcommands that only parse and call library functions (SPEC section 7).

Exit codes: 0 all ok, 1 a case failed (run, accuracy) or a regression (gate), 2 bad input (a user
mistake, one line on stderr; also a run directory that cannot be written).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .core.errors import UsageError

METRIC_GROUPS = ("params", "flops", "latency", "speedup", "memory", "train", "breakdown", "flops_train")


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


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says what it is (or it is an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _metrics(text: str) -> list[str]:
    items = _csv(text)
    bad = [m for m in items if m not in METRIC_GROUPS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown metric {bad[0]!r}; choose from {', '.join(METRIC_GROUPS)}")
    return items


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text!r}")
    return value


def _min_time(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-time", type=_seconds, default=None, metavar="SECONDS",
                   help="time each timed metric (latency, speedup, train_step) at least this long, and allow "
                        "up to 3x as long to tighten its confidence interval (default: the preset's)")


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    """Import the implementing module only when its command runs (keeps `--help` and `list` fast)."""

    def call(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(f"bench.{module}"), func)(args) or 0)

    return call


def _strategy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pruners", type=_csv, default=None, metavar="P,...",
                   help="pruned variants once per pruner (built-in or registered; default: each variant's own)")
    p.add_argument("--recoverers", type=_csv, default=None, metavar="R,...",
                   help="pruned seq2seq variants once per recoverer (default: each variant's own)")


def _executor_options(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--slurm-cpus", type=int, default=4, help="CPU cores per job")
    g.add_argument("--slurm-mem", type=int, default=32, metavar="GB", help="memory per job")
    g.add_argument("--slurm-account", default=None, help="Slurm account to charge (default: yours)")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option, repeatable (e.g. --slurm-extra constraint=a100)")
    g.add_argument("--slurm-folder", default=None, help="where submitit writes job logs (default: <out>/slurm)")


def _checkpoint_options(p: argparse.ArgumentParser, help_checkpoint: str) -> None:
    p.add_argument("--checkpoint", default=None, help=help_checkpoint)
    p.add_argument("--source", choices=("hot", "original"), default=None,
                   help="for a release's checkpoint: hot (NationalGAILab/HoT's copies) or original (the "
                        "backbone's own release); needed only where the tensors cannot tell (MotionAGFormer-B)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vptbench", description="Efficiency benchmarks of video pose transformers and their token-pruned variants.")
    parser.add_argument("--version", action=_Versions, nargs=0, help="print the versions of vptbench, torch and fvcore")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    # Every option shows its default in --help.
    sub_kw: dict[str, Any] = {"formatter_class": _Help}

    p = sub.add_parser("list", **sub_kw, help="backbones, variants and default schedules; pruners and recoverers")
    p.add_argument("what", nargs="?", choices=("backbones", "pruners", "recoverers"), default=None,
                   help="list only these (default: all three; with --json: backbones)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_lazy("commands.run", "cmd_list"))

    p = sub.add_parser("profile", **sub_kw, help="measure one case and print it")
    p.add_argument("backbone", help="a registered backbone (see vptbench list)")
    p.add_argument("--variant", default=None, help="rectangle (default), single or hierarchical")
    p.add_argument("--frames", type=int, default=None, help="sequence length T (default: the backbone's canonical T)")
    p.add_argument("--batch", type=int, default=1, help="clips per forward")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    p.add_argument("--size", default=None, help="model size (default: the backbone's default, e.g. lite for motionbert)")
    p.add_argument("--schedule", default="", metavar="BLOCK:KEEP,...",
                   help="prune points; KEEP a token count or a ratio of T (default '': the variant's)")
    p.add_argument("--pruner", default="", help="tps | tpc | tpa | tpmo (default '': the variant's)")
    p.add_argument("--recoverer", default="", help="tri | tra (default '': the variant's)")
    p.add_argument("--metrics", type=_metrics, default=None,
                   help=f"comma list of {', '.join(METRIC_GROUPS)} (default: all; none with --trace)")
    p.add_argument("--runtime", default="eager", help="how the forward runs when timed: eager (default), compile, onnxruntime")
    p.add_argument("--save-onnx", default=None, metavar="DIR", help="onnxruntime: write the exported .onnx file into DIR")
    p.add_argument("--onnx-exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="onnxruntime: the ONNX exporter (auto: torchscript, then dynamo if it fails)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the preset's)")
    _min_time(p)
    p.add_argument("--json", action="store_true", help="print the records as one JSON list, nothing else")
    _checkpoint_options(p, "profile the model of this checkpoint (a release's file or a vptbench one)")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="write a Chrome/Perfetto trace of a few steady-state forwards, labelled by part and block")
    p.set_defaults(func=_lazy("commands.run", "cmd_profile"))

    p = sub.add_parser("run", **sub_kw, help="measure a matrix of cases (default: the 'paper' preset) and report")
    p.add_argument("--preset", default=None, help="smoke | paper | scaling (default: paper)")
    p.add_argument("--backbones", type=_csv, default=None, help="comma list (default: every registered backbone)")
    p.add_argument("--variants", type=_csv, default=None, help="comma list (default: all three)")
    _strategy_options(p)
    p.add_argument("--frames", type=_ints, default=None, help="comma list of T (default: the preset's)")
    p.add_argument("--batch", type=_ints, default=None, help="comma list of batch sizes (default: the preset's)")
    p.add_argument("--size", default=None, help="model size for every backbone (default: the preset's)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: float32)")
    p.add_argument("--metrics", type=_metrics, default=None, help=f"comma list of {', '.join(METRIC_GROUPS)} (default: the preset's, all)")
    p.add_argument("--runtime", type=_csv, default=None, metavar="R,...",
                   help="runtimes to time, a comma list of eager (default), compile, onnxruntime; a matrix axis")
    p.add_argument("--save-onnx", action="store_true", help="onnxruntime: keep every exported .onnx in <out>/onnx/")
    p.add_argument("--onnx-exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="onnxruntime: the ONNX exporter (auto: torchscript, then dynamo if it fails)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the preset's)")
    _min_time(p)
    p.add_argument("--out", default=None, help="run directory (default: results/<run_id>)")
    p.add_argument("--report-out", default=None,
                   help="report directory (default: OUT/report with --out, else reports/<run_id>)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--extend", action="store_true",
                   help="with --resume: add the cases of the given matrix options to the run's own")  # fmt: skip
    _executor_options(p)
    p.set_defaults(func=_lazy("commands.run", "cmd_run"))

    p = sub.add_parser("accuracy", **sub_kw, help="train/evaluate variants and record MPJPE, P-MPJPE, MPJVE")
    p.add_argument("--preset", default=None, help="smoke | full (default: smoke)")
    p.add_argument("--backbones", type=_csv, default=None, help="comma list (default: every registered backbone)")
    p.add_argument("--variants", type=_csv, default=None, help="comma list (default: all three)")
    _strategy_options(p)
    p.add_argument("--frames", type=int, default=None, help="sequence length T (default: the preset's)")
    p.add_argument("--size", default=None, help="model size (default: the preset's)")
    p.add_argument("--data", choices=("synthetic", "h36m"), default="synthetic", help="the dataset")
    p.add_argument("--data-dir", default=None, help="h36m: folder of the VideoPose3D npz files")
    p.add_argument("--keypoints", choices=("cpn", "gt"), default="cpn", help="h36m: 2D from CPN detections or ground truth")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--batch", type=int, default=None, help="training batch size (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and synthetic data")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    _checkpoint_options(p, "evaluate this checkpoint instead of training (a vptbench one, or a release's file: "
                           "then --backbones and --variants take one value each)")
    p.add_argument("--out", default=None, help="run directory (default: results/<run_id>)")
    _executor_options(p)
    p.set_defaults(func=_lazy("accuracy.train", "cmd_accuracy"))

    p = sub.add_parser("convert", **sub_kw, help="a released checkpoint to a vptbench one, or back with --to-official")
    p.add_argument("ckpt", help="checkpoint file: a release's (HoT, MixSTE, MotionBERT, MHFormer, MotionAGFormer) "
                                "or, with --to-official, a vptbench one")
    p.add_argument("--backbone", default=None, help="mixste | motionbert | mhformer | motionagformer "
                                                     "(default: told by the checkpoint's keys)")
    p.add_argument("--variant", default=None, help="where the tensors cannot tell: single for TPC-MixSTE, TPC-MHFormer")
    p.add_argument("--source", choices=("hot", "original"), default=None,
                   help="hot: NationalGAILab/HoT's copies; original: the backbone's own release (needed for "
                        "MotionAGFormer-B, whose two releases differ in heads and neighbours, not in tensors)")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--to-official", action="store_true",
                   help="write the release's key names, shapes and container instead of a vptbench checkpoint")
    p.set_defaults(func=_lazy("accuracy.checkpoints", "cmd_convert"))

    p = sub.add_parser("sweep", **sub_kw, help="search pruning schedules: the cost (and accuracy) of each, the Pareto front")
    p.add_argument("backbone", help="a registered backbone (see vptbench list)")
    g = p.add_argument_group("grid (every valid schedule is measured)")
    g.add_argument("--stages", type=_ints, default=[1, 2], help="numbers of prune stages (default 1,2)")
    g.add_argument("--blocks", type=_ints, default=None, help="candidate prune blocks (default: every block)")
    g.add_argument("--keep", default="1/3,1/9", help="keeps, ratios of T (1/3, 0.25) or token counts (81); the "
                   "stages of a schedule take them in decreasing order (default 1/3,1/9)")
    g.add_argument("--pruners", type=_csv, default=["tps"], help="pruners, built-in or registered (default tps)")
    g.add_argument("--per-stage-pruners", action="store_true",
                   help="every combination of --pruners over a schedule's stages (2:9:tps,5:3:tpc, ...), "
                        "not one pruner per schedule")
    g.add_argument("--recoverers", type=_csv, default=["tri"], help="recoverers (default tri; none for seq2frame)")
    g.add_argument("--no-references", action="store_true",
                   help="leave out the backbone's registered defaults (rectangle, HoT, H2OT-style)")
    g = p.add_argument_group("measurement")
    g.add_argument("--size", default=None, help="default: the accuracy preset's size, else the backbone's")
    g.add_argument("--frames", type=int, default=None, help="T (default: the accuracy preset's, else canonical)")
    g.add_argument("--batch", type=int, default=1, help="batch of the efficiency measurements (default 1)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--runtime", default="eager", help="how each schedule's forward is timed: eager, compile, onnxruntime")
    g.add_argument("--metrics", type=_metrics, default=["flops", "latency"],
                   help="metric groups measured for every schedule (default flops,latency)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the preset's)")
    g = p.add_argument_group("accuracy and search")
    g.add_argument("--accuracy", default=None, metavar="smoke|full",
                   help="train and evaluate schedules with this accuracy preset (default: cost only)")
    g.add_argument("--steps", type=int, default=None, help="training steps of a fully trained schedule "
                   "(default: the preset's)")
    g.add_argument("--search", default="grid", metavar="grid|halving|optuna",
                   help="grid: train every schedule; halving: successive halving over --rungs; optuna: --trials N")
    g.add_argument("--rungs", type=int, default=3, help="successive halving: rungs (default 3)")
    g.add_argument("--trials", type=int, default=None, help="optuna: number of trials (needs the 'search' extra)")
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the initial weights")
    g.add_argument("--data", choices=("synthetic", "h36m"), default="synthetic", help="the accuracy data")
    g.add_argument("--data-dir", default=None, help="h36m: the folder of the VideoPose3D npz files")
    g = p.add_argument_group("front and budget")
    g.add_argument("--objectives", type=_csv, default=None, help="minimised objectives among flops, latency, "
                   "memory, mpjpe (default: flops,mpjpe with --accuracy, else flops,latency)")
    g.add_argument("--flops-counter", dest="counter", default="paper", metavar="paper|fvcore|torch",
                   help="FLOPs counter of the objectives and --budget-gflops: paper (default), fvcore, torch")
    g.add_argument("--budget-gflops", type=float, default=None, help="print the best schedule within X GFLOPs")
    g.add_argument("--budget-ms", type=float, default=None, help="print the best schedule within X ms of latency")
    g.add_argument("--out", default=None, help="sweep directory (default: results/<run_id>)")
    g.add_argument("--report", default=None, help="report directory (default: reports/<run_id>)")
    g.add_argument("--no-report", action="store_true", help="do not write the report")
    _executor_options(p)
    p.set_defaults(func=_lazy("sweep.grid", "cmd_sweep"))

    p = sub.add_parser("report", **sub_kw, help="tables and plots of a run, joined with accuracy")
    p.add_argument("run_dir", help="a run directory (or its records.jsonl)")
    p.add_argument("--accuracy", nargs="*", default=None, metavar="SRC",
                   help="accuracy records (run dirs or records.jsonl) or 'reported' (the papers' table)")
    p.add_argument("--out", default=None, help="report directory (default: reports/<run_id>)")
    p.set_defaults(func=_lazy("analysis.report", "cmd_report"))

    p = sub.add_parser("gate", **sub_kw, help="compare a run with a baseline; exit 1 on an efficiency regression")
    p.add_argument("--baseline", required=True, help="baseline records (a run directory or .jsonl)")
    p.add_argument("--current", required=True, help="the run to check (a run directory or .jsonl)")
    p.add_argument("--rules", default=None, help="TOML file of per-metric/backbone tolerances")
    p.set_defaults(func=_lazy("analysis.gate", "cmd_gate"))

    p = sub.add_parser("merge", **sub_kw, help="combine shard run directories into one run")
    p.add_argument("run_dirs", nargs="+", help="shard run directories")
    p.add_argument("--out", required=True, help="the merged run directory (new)")
    p.set_defaults(func=_lazy("run.merge", "cmd_merge"))

    p = sub.add_parser("compare", **sub_kw, help="runs side by side: ratios per metric with CIs; always exits 0")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or records.jsonl files; the first is the reference")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table (changes beyond noise in bold)")
    fmt.add_argument("--csv", action="store_true", help="print CSV, full precision")
    p.set_defaults(func=_lazy("analysis.compare", "cmd_compare"))

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
        return args.func(args)
    except UsageError as e:
        print(f"vptbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vptbench: interrupted; records written so far are kept (use --resume)", file=sys.stderr)
        return 130
