"""What the Slurm scheduler says: its partitions, the state of our jobs, why a job waits or ended.

    parts = partitions()                                  # sinfo + scontrol: name -> Partition
    problem = check_request(Request(cpus=4, mem_mb=32768, time_min=60), parts)   # None, or one line
    states = queue(["123", "124"])                        # squeue: "123_0" -> QueueState
    hopeless(states["123_0"].reason)                      # True: waiting will not start it
    ended = final_state("123_0", log)                     # scontrol, else sacct, else the job's log

:mod:`bench.run.slurm` submits and watches the jobs with these. The functions that read command
output (:func:`parse_sinfo`, :func:`parse_squeue`, :func:`parse_scontrol`, :func:`ended_from_log`)
are pure, so they are tested with the output of real commands pasted in. Nothing here needs
Slurm's accounting database (``sacct``): many small clusters run without one, and the states come
from ``squeue`` and ``scontrol`` instead; ``sacct`` is only asked about a job that ended so long
ago that ``scontrol`` has forgotten it (``MinJobAge``, 5 minutes by default).
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

SINFO_FORMAT = "%P|%N|%c|%m|%l|%a|%T|%G"
SQUEUE_FORMAT = "%i|%T|%r|%N"

# Node states that cannot take a job now (sinfo %T; suffixes such as * for "not responding" stripped).
UNUSABLE = {"down", "drained", "draining", "drain", "drng", "fail", "failing", "inval", "future", "maint", "unknown"}

# Pending reasons that waiting does not resolve: the job asks for more than the partition, its QOS
# or its association ever allows, or names something that does not exist. (ReqNodeNotAvail is
# hopeless only when no node of the partition can run jobs: :func:`bench.run.slurm` asks sinfo.)
HOPELESS = re.compile(
    r"^(PartitionConfig|PartitionNodeLimit|PartitionTimeLimit|InvalidAccount|InvalidQOS|BadConstraints"
    r"|DependencyNeverSatisfied|(Assoc|QOS)Max\w*PerJob\w*|QOSMin\w*|MaxMemPerLimit)"
)
EXPLAIN = {
    "PartitionConfig": "the job asks for more CPUs, memory or GPUs than a node of the partition has",
    "PartitionNodeLimit": "the job asks for more nodes than the partition allows",
    "PartitionTimeLimit": "the job's time limit is above the partition's",
    "InvalidAccount": "the account does not exist or may not use this partition",
    "InvalidQOS": "the QOS does not exist or may not be used with this account",
    "BadConstraints": "no node has the features (constraint) the job asks for",
    "ReqNodeNotAvail": "every node that could run the job is down, drained or reserved",
}

# Final job states (squeue/scontrol/sacct) -> (record status, what happened).
ENDED = {
    "TIMEOUT": ("error", "reached its time limit and was killed by Slurm"),
    "OUT_OF_MEMORY": ("oom", "ran out of its memory and was killed by Slurm"),
    "NODE_FAIL": ("error", "was killed by Slurm: its node failed"),
    "PREEMPTED": ("error", "was preempted by Slurm"),
    "CANCELLED": ("error", "was cancelled (scancel, or by an administrator)"),
    "BOOT_FAIL": ("error", "never ran: its node failed to boot"),
    "DEADLINE": ("error", "was killed by Slurm: it reached its deadline"),
    "FAILED": ("error", "failed (its batch script exited with an error)"),
    "COMPLETED": ("error", "ended without writing its result"),
}
# What slurmstepd writes into the job's stderr when it kills the job.
LOG_MARKS = (
    (re.compile(r"DUE TO TIME LIMIT"), "TIMEOUT"),
    (re.compile(r"oom[-_ ]kill|Out Of Memory|OUT_OF_MEMORY", re.I), "OUT_OF_MEMORY"),
    (re.compile(r"DUE TO NODE FAIL"), "NODE_FAIL"),
    (re.compile(r"DUE TO PREEMPTION"), "PREEMPTED"),
    (re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED"), "CANCELLED"),
)


# --------------------------------------------------------------------------- partitions


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int = 0
    state: str = "idle"

    @property
    def usable(self) -> bool:
        """Can take jobs now (not down, drained, failing or not responding)."""
        return not self.state.endswith("*") and self.state.rstrip("*~#!%$@^-+") not in UNUSABLE


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[Node, ...] = ()
    time_min: float = math.inf  # the partition's time limit per job, minutes
    up: bool = True
    default: bool = False
    max_cpus_per_node: float = math.inf
    max_mem_mb_per_node: float = math.inf

    def offers(self) -> str:
        """What the partition offers a job, in words: 'at most 2 CPUs and 18.8 GB per node, no time limit'."""
        cpus = min(max((n.cpus for n in self.nodes), default=0), self.max_cpus_per_node)
        mem = min(max((n.mem_mb for n in self.nodes), default=0), self.max_mem_mb_per_node)
        gpus = max((n.gpus for n in self.nodes), default=0)
        text = f"at most {cpus:g} CPUs, {mem / 1024:.1f} GB" + (f", {gpus} GPUs" if gpus else "") + " per node"
        limit = "no time limit" if math.isinf(self.time_min) else f"time limit {self.time_min:g} min"
        return f"{text} ({len(self.nodes)} node(s)), {limit}"


@dataclass(frozen=True)
class Request:
    """What each job asks for (one job per case)."""

    cpus: int
    mem_mb: int
    time_min: int
    gpus: int = 0
    partition: str | None = None  # None: the cluster's default partition
    exclusive: bool = False

    def describe(self) -> str:
        text = f"{self.cpus} CPU{'s' if self.cpus != 1 else ''}, {self.mem_mb / 1024:g} GB, {self.time_min} min"
        return text + (f", {self.gpus} GPUs" if self.gpus else "") + (", a whole node" if self.exclusive else "")


def parse_time(text: str) -> float:
    """A Slurm time ('infinite', '30:00', '2:00:00', '1-12:00:00', '45') in minutes."""
    text = text.strip()
    if text.upper() in ("INFINITE", "UNLIMITED", "N/A", "NONE", ""):
        return math.inf
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        parts += [0.0] * (3 - len(parts))
        return float(days) * 24 * 60 + parts[0] * 60 + parts[1] + parts[2] / 60
    if len(parts) == 3:  # hours:minutes:seconds
        return parts[0] * 60 + parts[1] + parts[2] / 60
    return parts[0] + (parts[1] / 60 if len(parts) == 2 else 0)  # minutes[:seconds]


def _gpus(gres: str) -> int:
    """GPUs in a sinfo %G field such as 'gpu:4', 'gpu:a100:8(S:0-1)' or '(null)'."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", gres))


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions from ``sinfo -h -N -o SINFO_FORMAT`` (one line per node and partition)."""
    nodes: dict[str, list[Node]] = {}
    info: dict[str, tuple[float, bool, bool]] = {}
    for line in text.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 7:
            continue
        name, node, cpus, mem, limit, avail, state = cols[:7]
        default = name.endswith("*")
        name = name.rstrip("*")
        nodes.setdefault(name, []).append(
            Node(node, int(cpus.rstrip("+") or 0), int(mem.rstrip("+") or 0), _gpus(cols[7] if len(cols) > 7 else ""),
                 state)  # fmt: skip
        )
        info[name] = (parse_time(limit), avail.strip().lower() == "up", default)
    return {n: Partition(n, tuple(nodes[n]), *info[n]) for n in nodes}


def parse_scontrol(text: str) -> list[dict[str, str]]:
    """``scontrol -o show job|partition ...``: one dict of KEY=VALUE per line."""
    out = []
    for line in text.splitlines():
        if "=" in line:
            out.append(dict(re.findall(r"(\S+?)=(\S*)", line)))
    return out


def with_limits(parts: dict[str, Partition], scontrol_text: str) -> dict[str, Partition]:
    """``parts`` with MaxCPUsPerNode and MaxMemPerNode from ``scontrol -o show partition``."""
    out = dict(parts)
    for p in parse_scontrol(scontrol_text):
        name = p.get("PartitionName", "")
        if name not in out:
            continue
        cpus, mem = p.get("MaxCPUsPerNode", "UNLIMITED"), p.get("MaxMemPerNode", "UNLIMITED")
        out[name] = replace(
            out[name],
            max_cpus_per_node=float(cpus) if cpus.isdigit() else math.inf,
            max_mem_mb_per_node=float(mem) if mem.isdigit() else math.inf,
        )
    return out


def check_request(req: Request, parts: Mapping[str, Partition]) -> str | None:
    """None if some usable node of the request's partition can run the job; otherwise why, in one line."""
    if not parts:
        return "Slurm reports no partition (sinfo lists none)"
    if req.partition is None:
        defaults = [p for p in parts.values() if p.default]
        if not defaults:
            return f"the cluster has no default partition: choose --slurm-partition from {', '.join(sorted(parts))}"
        part = defaults[0]
    elif req.partition not in parts:
        return f"--slurm-partition {req.partition}: no such partition; choose from {', '.join(sorted(parts))}"
    else:
        part = parts[req.partition]
    where = f"partition {part.name} offers {part.offers()}"
    if not part.up:
        return f"partition {part.name} is not up: its jobs would wait until an administrator brings it back"
    if req.time_min > part.time_min:
        return f"--slurm-time {req.time_min} (minutes per job) is above the time limit of partition {part.name} ({part.time_min:g} min)"
    lacks = []
    cpus = min(max((n.cpus for n in part.nodes), default=0), part.max_cpus_per_node)
    mem = min(max((n.mem_mb for n in part.nodes), default=0), part.max_mem_mb_per_node)
    if req.cpus > cpus:
        lacks.append(f"{req.cpus} CPUs (--slurm-cpus)")
    if req.mem_mb > mem:
        lacks.append(f"{req.mem_mb / 1024:g} GB (--slurm-mem)")
    if req.gpus > max((n.gpus for n in part.nodes), default=0):
        lacks.append(f"{req.gpus} GPUs (--slurm-gpus)")
    if lacks:
        return f"each job asks for {' and '.join(lacks)}, more than any node has: {where}"
    fits = [n for n in part.nodes if _fits(req, n, part)]
    if not fits:
        return f"no single node has {req.describe()}: {where}"
    if not any(n.usable for n in fits):
        states = ", ".join(f"{n.name} {n.state}" for n in fits[:4])
        return f"every node of partition {part.name} that fits the jobs ({req.describe()}) is unavailable ({states})"
    return None


def _fits(req: Request, node: Node, part: Partition) -> bool:
    return (min(node.cpus, part.max_cpus_per_node) >= req.cpus and min(node.mem_mb, part.max_mem_mb_per_node) >= req.mem_mb
            and node.gpus >= req.gpus)  # fmt: skip


def partitions() -> dict[str, Partition]:
    """The cluster's partitions and their nodes (sinfo), with per-node limits (scontrol) where it says."""
    parts = parse_sinfo(_run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT]))
    try:
        return with_limits(parts, _run(["scontrol", "-o", "show", "partition"]))
    except SlurmCommandError:
        return parts


# --------------------------------------------------------------------------- jobs in the queue


@dataclass(frozen=True)
class QueueState:
    state: str  # PENDING, RUNNING, COMPLETING, ...
    reason: str = "None"
    node: str = ""


def parse_squeue(text: str) -> dict[str, QueueState]:
    """Job id ('123_4' for array tasks) -> state, from ``squeue -h -r -o SQUEUE_FORMAT``."""
    out = {}
    for line in text.splitlines():
        cols = line.strip().split("|")
        if len(cols) >= 3 and cols[0]:
            out[cols[0]] = QueueState(cols[1], cols[2], cols[3] if len(cols) > 3 else "")
    return out


def queue(job_ids: Iterable[str]) -> dict[str, QueueState]:
    """The queue's entries of ``job_ids`` (array ids cover all their tasks); SlurmCommandError if squeue fails."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    try:
        return parse_squeue(_run(["squeue", "-h", "-r", "-o", SQUEUE_FORMAT, "-j", ",".join(ids)]))
    except SlurmCommandError as e:
        if "Invalid job id" in str(e):  # squeue's answer when every id asked for is forgotten (MinJobAge)
            return {}
        raise


def hopeless(reason: str, parts: Mapping[str, Partition] | None = None, partition: str | None = None) -> bool:
    """Whether a pending job with this reason will never start however long it waits.

    ``ReqNodeNotAvail`` (every node it could use is down, drained or reserved) counts only when
    ``parts`` show no usable node in the job's ``partition`` (None: the default one).
    """
    reason = reason.strip()
    if reason.startswith("ReqNodeNotAvail"):
        if parts is None:
            return False
        part = parts.get(partition) if partition else next((p for p in parts.values() if p.default), None)
        return part is not None and not any(n.usable for n in part.nodes)
    return bool(HOPELESS.match(reason))


def explain(reason: str) -> str:
    """A pending reason with what it means, where known: 'PartitionConfig (the job asks for more ...)'."""
    key = reason.split(",")[0].strip()
    return f"{key} ({EXPLAIN[key]})" if key in EXPLAIN else key


def cancel(job_ids: Sequence[str]) -> None:
    """scancel the jobs (array ids cancel every task): pending ones leave the queue, running ones are killed."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- jobs that ended


@dataclass(frozen=True)
class Ended:
    """How a job that left the queue without a result ended."""

    state: str  # TIMEOUT, OUT_OF_MEMORY, CANCELLED, ... or UNKNOWN
    status: str  # the records' status: error or oom
    why: str  # one phrase: 'reached its time limit (1 min) and was killed by Slurm'
    source: str = ""  # scontrol, sacct or the log

    @property
    def final(self) -> bool:
        return self.state != "UNKNOWN"


def describe_end(state: str, info: Mapping[str, str] | None = None, source: str = "") -> Ended:
    """The record status and words for a final job state, with its limit where the state is about one."""
    state = state.split()[0].upper() if state.strip() else "UNKNOWN"  # 'CANCELLED by 0' -> CANCELLED
    status, what = ENDED.get(state, ("error", f"ended in state {state}"))
    info = info or {}
    if state == "TIMEOUT" and info.get("TimeLimit"):
        limit = parse_time(info["TimeLimit"])
        what = f"reached its time limit ({limit:g} min, --slurm-time) and was killed by Slurm"
    if state == "OUT_OF_MEMORY" and (info.get("MinMemoryNode") or info.get("mem")):
        what = f"ran out of its memory ({info.get('MinMemoryNode') or info.get('mem')}, --slurm-mem) and was killed by Slurm"
    if info.get("Reason") not in (None, "", "None") and state not in ("TIMEOUT", "COMPLETED"):
        what += f" (reason {info['Reason']})"
    return Ended(state, status, what, source)


def ended_from_log(text: str) -> str:
    """The final state that slurmstepd's or the kernel's lines in a job's stderr show, or ''."""
    for pattern, state in LOG_MARKS:
        if pattern.search(text):
            return state
    return ""


def final_state(job_id: str, log: Path | None = None) -> Ended:
    """How ``job_id`` ended: scontrol while it remembers the job, else sacct, else the job's log."""
    try:
        (info,) = parse_scontrol(_run(["scontrol", "-o", "show", "job", job_id]))[:1] or [{}]
        if info.get("JobState"):
            return describe_end(info["JobState"], info, "scontrol")
    except SlurmCommandError:
        pass  # forgotten after MinJobAge
    try:
        lines = _run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,Timelimit,ReqMem"]).splitlines()
        if lines and lines[0].strip():
            state, limit, mem = (lines[0].split("|") + ["", ""])[:3]
            return describe_end(state, {"TimeLimit": limit, "mem": mem}, "sacct")
    except SlurmCommandError:
        pass  # no accounting database: common on small clusters
    text = ""
    if log is not None and log.is_file():
        text = log.read_text(errors="replace")[-20000:]
    state = ended_from_log(text)
    return describe_end(state, {}, "log") if state else Ended("UNKNOWN", "error", "ended without a result", "")


# --------------------------------------------------------------------------- commands


class SlurmCommandError(RuntimeError):
    """A Slurm client command failed (slurmctld unreachable, a job id it no longer knows...)."""


def _run(cmd: list[str], timeout: float = 30) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmCommandError(f"{cmd[0]}: {e}") from None
    if p.returncode != 0:
        last = (p.stderr or p.stdout).strip().splitlines()[-1:]
        raise SlurmCommandError(f"{cmd[0]}: {last[0] if last else f'exit status {p.returncode}'}")
    return p.stdout
