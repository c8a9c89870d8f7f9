"""``vptbench accuracy``: train (or load) and evaluate backbones and variants, record MPJPE, P-MPJPE, MPJVE."""

from __future__ import annotations

import argparse
from typing import Any

from . import options


def add_parser(sub: Any, **kw: Any) -> None:
    p = sub.add_parser("accuracy", **kw, help="train/evaluate variants and record MPJPE, P-MPJPE, MPJVE")
    p.add_argument("--preset", default=None, help="smoke | full (default: smoke)")
    p.add_argument("--backbones", type=options.csv_list, default=None, help="comma list (default: every registered backbone)")
    p.add_argument("--variants", type=options.csv_list, default=None, help="comma list (default: all three)")
    options.strategy_options(p)
    p.add_argument("--frames", type=int, default=None, help="sequence length T (default: the preset's)")
    p.add_argument("--size", default=None, help="model size (default: the preset's)")
    p.add_argument("--data", choices=("synthetic", "h36m"), default="synthetic", help="the dataset")
    p.add_argument("--data-dir", default=None, help="h36m: folder of the VideoPose3D npz files")
    p.add_argument("--keypoints", choices=("cpn", "gt"), default="cpn", help="h36m: 2D from CPN detections or ground truth")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--batch", type=int, default=None, help="training batch size (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and synthetic data")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    options.checkpoint_options(p, "evaluate this checkpoint instead of training (a vptbench one, or a release's file: "
                           "then --backbones and --variants take one value each)")
    p.add_argument("--out", default=None, help="run directory (default: results/<run_id>)")
    options.executor_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..accuracy.train import cmd_accuracy

    return cmd_accuracy(args)
