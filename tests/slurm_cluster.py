"""A single-node Slurm cluster on localhost for tests: munged, slurmctld and slurmd in one temp directory.

`start()` writes a private munge key and slurm.conf (unused ports, its own state, spool and log dirs; the
machine's cores as one partition), starts the three daemons in the foreground as children of this process and
waits until `sinfo` shows the node idle. `stop()` cancels the cluster's jobs, stops the daemons and removes the
directory; processes the cluster started (slurmstepd, job steps) are found by the SLURM_CONF their
environment carries and ended by pid. Clients reach the cluster through `cluster.env` (SLURM_CONF).
Needs Debian's slurm-wlm and munge, and root (slurmd launches jobs as their user).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "scancel")
PARTITION = "kvbench"
NODE = "kvnode"
# sacct reads slurmdbd's accounting, which needs a database; this cluster has none. submitit asks sacct for
# the state of its jobs (`sacct -o JobID,State,NodeList --parsable2 -j ID ...`): the stand-in answers that one
# query from squeue, which keeps finished jobs for MinJobAge seconds. Without it submitit still sees a job's
# result file, but would wait forever on a job that died without one.
SACCT = """#!/bin/sh
ids=""
while [ $# -gt 0 ]; do
  case "$1" in -j) ids="$ids${ids:+,}$2"; shift ;; esac
  shift
done
echo "JobID|State|NodeList"
exec squeue -h --states=all -j "$ids" -o "%i|%T|%N"
"""


def missing() -> str | None:
    """Why no cluster can start here (None: it can)."""
    absent = [b for b in (*DAEMONS, *CLIENTS) if shutil.which(b) is None]
    if absent:
        return f"Slurm is not installed (no {', '.join(absent)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd starts jobs as their user)"
    return None


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    partition: str = PARTITION
    procs: dict = field(default_factory=dict)   # name -> Popen

    @property
    def env(self) -> dict:
        """The environment a client (sinfo, sbatch, submitit) needs to talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf),
                "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(self, *argv: str, timeout: float = 20) -> str:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=True).stdout

    def node_state(self) -> str:
        try:
            return self.run("sinfo", "-h", "-N", "-o", "%T", timeout=5).strip()
        except (subprocess.SubprocessError, OSError):
            return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = next(int(ln.split()[1]) for ln in f if ln.startswith("MemTotal:"))
    return total_kb // 1024


def _write_conf(root: Path, cpus: int) -> Path:
    host = socket.gethostname().split(".")[0]  # slurmctld checks that it runs on SlurmctldHost
    conf = root / "slurm.conf"
    (root / "plugstack.conf").write_text("")
    # memory is scheduled (jobs may ask --mem) but not enforced: no cgroups in a container
    mem_mb = min(_memory_mb() * 3 // 4, 8192)
    mem_per_cpu_mb = mem_mb // cpus  # a job that asks no memory takes a core's share, not the node's
    conf.write_text(f"""\
ClusterName=kvbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
MpiDefault=none
DefMemPerCPU={mem_per_cpu_mb}
ReturnToService=2
KillWait=30
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def start(ready_timeout_s: float = 30.0) -> SlurmCluster:
    """A running cluster whose node is idle; on failure everything started is stopped and the daemons'
    logs are in the error."""
    root = Path(tempfile.mkdtemp(prefix="kvbench-slurm-"))
    root.chmod(0o755)  # munged wants its socket's directories searchable by all
    for d in ("munge", "state", "spool", "log", "bin"):
        (root / d).mkdir(mode=0o755)
    sacct = root / "bin" / "sacct"
    sacct.write_text(SACCT)
    sacct.chmod(0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    cpus = len(os.sched_getaffinity(0))  # the cores this process may use: the partition
    cluster = SlurmCluster(root, _write_conf(root, cpus))
    env = cluster.env
    try:
        cluster.procs["munged"] = _daemon(
            ["munged", "-F", f"--socket={root}/munge/munge.socket", f"--key-file={key}",
             f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/seed"], root, "munged", env)
        _wait(lambda: (root / "munge" / "munge.socket").exists(), 10, "munged's socket", cluster)
        cluster.procs["slurmctld"] = _daemon(["slurmctld", "-D", "-i"], root, "slurmctld.out", env)
        cluster.procs["slurmd"] = _daemon(["slurmd", "-D", "-N", NODE], root, "slurmd.out", env)
        _wait(lambda: cluster.node_state() == "idle", ready_timeout_s, "the node to be idle", cluster)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _daemon(argv: list[str], root: Path, log: str, env: dict) -> subprocess.Popen:
    out = open(root / "log" / f"{log}.log", "ab")
    try:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        out.close()


def _wait(ok, timeout_s: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for name, p in cluster.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited ({p.returncode}) waiting for {what}:\n{_logs(cluster)}")
        if ok():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}:\n{_logs(cluster)}")


def _logs(cluster: SlurmCluster) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted((cluster.root / "log").glob("*.log")))


def cluster_pids(conf: Path) -> list[int]:
    """Processes whose environment names this cluster's slurm.conf (its daemons' children, its jobs)."""
    marker = f"SLURM_CONF={conf}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if marker in (d / "environ").read_bytes().split(b"\0"):
                pids.append(int(d.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def stop(cluster: SlurmCluster, grace_s: float = 10.0) -> None:
    """Cancel every job, stop the daemons, end what the cluster started, remove its directory."""
    try:
        if cluster.procs.get("slurmctld") and cluster.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", f"--partition={cluster.partition}"], env=cluster.env,
                           capture_output=True, timeout=10)
    finally:
        for name in reversed(DAEMONS):
            p = cluster.procs.get(name)
            if p is not None and p.poll() is None:
                # slurmd would first wait seconds for the jobs it is ending; what they leave is killed below
                p.kill() if name == "slurmd" else p.terminate()
                try:
                    p.wait(grace_s)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        # slurmstepd and a job's processes outlive slurmd by design: whatever carries this cluster's
        # SLURM_CONF in its environment was started by it
        deadline = time.time() + grace_s
        while (pids := cluster_pids(cluster.conf)) and time.time() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        shutil.rmtree(cluster.root, ignore_errors=True)
