"""A throwaway single-node Slurm cluster on localhost: for the tests marked ``slurm``, and by hand.

    python -m tests.slurm_cluster start DIR    # prints the line to export: SLURM_CONF=DIR/slurm.conf
    python -m tests.slurm_cluster stop DIR     # cancels its jobs, stops its daemons, leaves nothing running

It installs nothing: it needs ``munged``, ``slurmctld`` and ``slurmd`` (Debian: ``apt-get install
slurm-wlm munge``) and runs them from ``DIR`` with a fresh munge key, a ``slurm.conf`` of its own
(free ports, no accounting database, one partition ``debug`` of this one node with 2 CPUs and
80 % of the memory) and state and spool directories there, so it never touches a system
installation or another such cluster. Client commands and submitit find it through
``SLURM_CONF``. The job time limits are hard (``OverTimeLimit=0``) and a killed job gets 2 s to
end (``KillWait``), so the tests of time limits wait as little as Slurm allows (slurmctld still
checks the limits only every 30 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CPUS = 2


def missing() -> list[str]:
    """The daemons and client commands this cluster needs that are not installed."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    needed = (*DAEMONS, "sbatch", "squeue", "scancel", "sinfo", "scontrol", "srun")
    return [n for n in needed if shutil.which(n, path=path) is None]


def _which(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mem_mb() -> int:
    with open("/proc/meminfo") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
    return int(kb / 1024 * 0.8)


class Cluster:
    """A single-node Slurm whose files all live under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]

    @property
    def env(self) -> dict[str, str]:
        """What a client command needs in its environment to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _run(self, *cmd: str, check: bool = False, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=os.environ | self.env, capture_output=True, text=True, check=check,
                              timeout=timeout)  # fmt: skip

    def write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        user = pwd.getpwuid(os.getuid()).pw_name
        ctld_port, slurmd_port = _free_ports(2)
        lines = [
            "ClusterName=vpt",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={r / 'run' / 'munge.socket'}",
            "CryptoType=crypto/munge",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "OverTimeLimit=0",
            "KillWait=2",
            "InactiveLimit=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={_mem_mb()} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 60) -> None:
        """Start the three daemons and wait until the node is idle; RuntimeError (naming a log) if not."""
        self.write_config()
        r = self.root
        commands = {
            "munged": [_which("munged"), "--foreground", "--force", f"--key-file={r / 'munge.key'}",
                       f"--socket={r / 'run' / 'munge.socket'}", f"--pid-file={r / 'run' / 'munged.pid'}",
                       f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'run' / 'munge.seed'}"],
            "slurmctld": [_which("slurmctld"), "-D", "-f", str(self.conf)],
            "slurmd": [_which("slurmd"), "-D", "-f", str(self.conf)],
        }  # fmt: skip
        pids: dict[str, int] = {}
        try:
            for name, cmd in commands.items():
                with open(r / "log" / f"{name}.out", "ab") as out:
                    # A session of its own: the daemons outlive `start` run by hand, and no Ctrl-C meant
                    # for the caller reaches them.
                    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                            env=os.environ | self.env, start_new_session=True)  # fmt: skip
                pids[name] = proc.pid
                (r / "pids.json").write_text(json.dumps(pids))
                if name == "munged":
                    self._wait(lambda: (r / "run" / "munge.socket").exists(), 10, "munged", "munged.log")
            self._wait(self._idle, timeout, "the node to be idle", "slurmctld.log")
        except BaseException:
            self.stop()
            raise

    def _idle(self) -> bool:
        try:
            out = self._run("sinfo", "-h", "-N", "-o", "%T", timeout=5).stdout.split()
        except subprocess.TimeoutExpired:
            return False
        return bool(out) and all(s.rstrip("*") in ("idle", "mixed", "allocated") for s in out)

    def _wait(self, ready, timeout: float, what: str, log: str) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while not ready():
            dead = [n for n, pid in self._pids().items() if not _alive(pid)]
            if dead or time.monotonic() > end:
                why = f"{', '.join(dead)} exited" if dead else f"no {what} after {timeout:.0f} s"
                raise RuntimeError(f"the test Slurm did not start: {why} (see {self.root / 'log' / log})")
            time.sleep(0.2)

    def _pids(self) -> dict[str, int]:
        path = self.root / "pids.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def jobs(self) -> list[str]:
        """Lines of ``squeue`` for every job this cluster holds (``JOBID STATE REASON NAME``)."""
        out = self._run("squeue", "-h", "-r", "-o", "%i %T %r %j").stdout
        return [line for line in out.splitlines() if line.strip()]

    def stop(self, timeout: float = 20) -> None:
        """Cancel every job, then stop the daemons (SIGTERM, SIGKILL after ``timeout``) and wait for them."""
        pids = self._pids()
        if not pids:
            return
        if _alive(pids.get("slurmctld")):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run("scancel", "--user", pwd.getpwuid(os.getuid()).pw_name, timeout=10)
                end = time.monotonic() + timeout
                while self.jobs() and time.monotonic() < end:
                    time.sleep(0.3)
        for name in reversed(DAEMONS):  # slurmd first, munged last: the others authenticate through it
            _terminate(pids.get(name), timeout)
        (self.root / "pids.json").unlink(missing_ok=True)


def _alive(pid: int | None) -> bool:
    """True while ``pid`` runs (a zombie left unreaped by a container's init counts as gone)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _terminate(pid: int | None, timeout: float) -> None:
    if not _alive(pid):
        return
    assert pid is not None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        end = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < end:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it where it is our child (the test session's daemons)
            time.sleep(0.1)
        if not _alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.slurm_cluster start|stop DIR", file=sys.stderr)
        return 2
    cluster = Cluster(argv[1])
    if argv[0] == "stop":
        cluster.stop()
        return 0
    if missing():
        print(f"cannot start a test Slurm: {', '.join(missing())} not installed "
              "(Debian: apt-get install slurm-wlm munge)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        cluster.start()
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
