#!/usr/bin/env bash
# A throw-away Slurm cluster on this one machine, for Clary's Slurm tests (SLURM.md in the
# team's shared notes has the measurements behind these choices). Needs root; installs
# Debian's packages when they are missing. Nodes n1..nN are slurmd processes on 127.0.0.1
# with ports 17001.., each claiming 2 CPUs (several nodes share the real cores).
#   scripts/slurm.sh up [N=2]     start (or restart) the cluster, wait until every node is idle
#   scripts/slurm.sh down [N=2]   stop the daemons this script started, by their pid files
set -euo pipefail
cmd=${1:-up}
N=${2:-2}
STATE=/var/spool/clary-slurm
pidfile_ctld=/run/clary-slurmctld.pid

# Ends the daemon whose pid file is $1, and waits until it is gone (a controller still
# shutting down would hold its port against the next one).
stop_daemon() {
  local f=$1 pid
  [ -s "$f" ] || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

down() {
  for i in $(seq 1 "$N"); do
    stop_daemon "/run/clary-slurmd-n$i.pid"
  done
  stop_daemon "$pidfile_ctld"
}

if [ "$cmd" = down ]; then
  down
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge
fi
down
mkdir -p /etc/slurm "$STATE/ctld" /var/log/slurm

# munge authenticates the daemons and the clients to each other.
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
munge -n >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done

host=$(hostname -s)
mem=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) / N ))
{
  cat <<CONF
ClusterName=clary
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/%n
SlurmctldPidFile=$pidfile_ctld
SlurmdPidFile=/run/clary-slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
# No cgroups here: plain process tracking, no task binding or accounting gathering.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# The nodes share the machine's cores: trust this file, not the hardware probe.
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to scontrol for an hour (there is no accounting database).
MinJobAge=3600
SlurmdTimeout=30
KillWait=5
CONF
  for i in $(seq 1 "$N"); do
    echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=2 RealMemory=$mem State=UNKNOWN"
  done
  echo "PartitionName=clary Nodes=n[1-$N] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
} > /etc/slurm/slurm.conf

slurmctld -c
for i in $(seq 1 "$N"); do
  mkdir -p "$STATE/n$i"
  slurmd -N "n$i"
done
for _ in $(seq 150); do
  [ "$(sinfo -h -N -o '%T' 2>/dev/null | grep -cE '^(idle|mixed|allocated)$')" = "$N" ] && break
  sleep 0.2
done
sinfo -N
[ "$(sinfo -h -N -o '%T' | grep -cE '^(idle|mixed|allocated)$')" = "$N" ]
