"""``python -m bench.worker PART_DIR``: run the one case pickled in ``PART_DIR/task.pkl``.

The local executor (:mod:`bench.executors`) starts one of these per case, so that every case
runs in a fresh interpreter. The task writes its records into the part and closes it itself;
exit code 0 means the case finished, anything else (including a kill) is recorded by the parent.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.worker PART_DIR", file=sys.stderr)
        return 2
    import cloudpickle

    task = cloudpickle.loads((Path(argv[0]) / "task.pkl").read_bytes())
    task()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
