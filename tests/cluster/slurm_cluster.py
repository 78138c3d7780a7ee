"""A one-node SLURM cluster on this machine, for tests (root only; Debian's slurm-wlm and munge).

`start_cluster` installs the packages when absent, writes /etc/slurm/slurm.conf and gres.conf (backing up
files it did not write), starts munged, slurmctld and slurmd in the foreground as child processes and waits
for the node to be idle. `stop_cluster` stops exactly those processes, by their process ids, and restores
the configuration. See /work/shared/CLUSTER-NOTES.md (why /etc/slurm, squeue, gres File=).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "# written by fmrivid tests/cluster/slurm_cluster.py"
BINARIES = ["sbatch", "squeue", "sinfo", "scontrol", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged"]
CONF_DIR = Path("/etc/slurm")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be started here; the message says why (used as the pytest skip reason)."""


@dataclass
class Cluster:
    workdir: Path
    procs: dict = field(default_factory=dict)      # name -> Popen
    backups: dict = field(default_factory=dict)    # path -> backup path (None: did not exist)
    host: str = ""

    @property
    def ctld_log(self) -> Path:
        return self.workdir / "slurmctld.log"


def _have_binaries():
    return all(shutil.which(b) for b in BINARIES)


def _running(name):
    """Process ids of running processes whose command name is `name` (read from /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def install_packages(timeout=900):
    """apt-get install slurm-wlm munge when absent; raise ClusterUnavailable when that is impossible."""
    if _have_binaries():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterUnavailable("slurm-wlm/munge are not installed and cannot be installed here "
                                 "(needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=timeout)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0 or not _have_binaries():
        raise ClusterUnavailable(f"apt-get install slurm-wlm munge failed: {proc.stderr.strip()[-300:]}")


def _mem_mb():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


def slurm_conf(host, workdir, cpus, mem_mb):
    """Text of a one-node slurm.conf (select/cons_tres, no accounting, one fake GPU)."""
    return f"""{MARKER}
ClusterName=fmrivid-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/builtin
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd.pid
SlurmctldLogFile={workdir}/slurmctld.log
SlurmdLogFile={workdir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _write_conf(cluster, name, text):
    path = CONF_DIR / name
    if path not in cluster.backups:
        if path.exists() and MARKER not in path.read_text():
            backup = cluster.workdir / f"{name}.orig"
            shutil.copy2(path, backup)
            cluster.backups[path] = backup
        else:
            cluster.backups[path] = None
    path.write_text(text)


def _wait(predicate, timeout, what, cluster):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for name, p in cluster.procs.items():
            if p.poll() is not None:
                log = cluster.workdir / f"{name}.out"
                tail = log.read_text()[-1500:] if log.exists() else ""
                raise ClusterUnavailable(f"{name} exited with {p.returncode} while waiting for {what}: {tail}")
        if predicate():
            return
        time.sleep(0.5)
    raise ClusterUnavailable(f"timed out after {timeout} s waiting for {what}")


def _node_state():
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    return proc.stdout.strip()


def start_cluster(workdir, cpus=None, mem_mb=None):
    """Start a one-node SLURM cluster; return a Cluster (always pass it to stop_cluster)."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting SLURM daemons needs root (CI runs as root)")
    install_packages()
    for daemon in ("slurmctld", "slurmd"):
        if _running(daemon):
            raise ClusterUnavailable(f"a {daemon} is already running on this machine; the test does not touch "
                                     "daemons it did not start")
    workdir = Path(workdir)
    for sub in ("state", "spool"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    cluster = Cluster(workdir=workdir, host=host)
    cpus = cpus or os.cpu_count()
    mem_mb = mem_mb or int(_mem_mb() * 0.8)
    fake_gpu = workdir / "fake-gpu0"
    fake_gpu.write_text("a file standing for a GPU device: gres.conf needs File= to exist\n")
    try:
        _write_conf(cluster, "slurm.conf", slurm_conf(host, workdir, cpus, mem_mb))
        _write_conf(cluster, "gres.conf", f"{MARKER}\nAutoDetect=off\nName=gpu File={fake_gpu}\n")
        run_munge = Path("/run/munge")
        run_munge.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_munge, "munge", "munge")
        socket_path = run_munge / "munge.socket.2"
        if not _running("munged"):
            cluster.procs["munged"] = _spawn(["/usr/sbin/munged", "-F"], workdir / "munged.out", user="munge")
            _wait(socket_path.exists, 30, "the munge socket", cluster)
        cluster.procs["slurmctld"] = _spawn(["/usr/sbin/slurmctld", "-D", "-i"], workdir / "slurmctld.out")
        _wait(lambda: subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP") > 0,
              60, "slurmctld to answer", cluster)
        cluster.procs["slurmd"] = _spawn(["/usr/sbin/slurmd", "-D"], workdir / "slurmd.out")
        _wait(lambda: _node_state() in ("idle", "mixed"), 90, "the node to be idle", cluster)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def _spawn(cmd, out, user=None):
    with open(out, "w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, user=user, group=user)


def stop_cluster(cluster):
    """Stop the daemons this cluster started (by pid, in reverse order) and restore the configuration."""
    for name in reversed(list(cluster.procs)):
        p = cluster.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    cluster.procs.clear()
    for path, backup in cluster.backups.items():
        if backup is None:
            path.unlink(missing_ok=True)
        else:
            shutil.copy2(backup, path)
    cluster.backups.clear()
