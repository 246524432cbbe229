#!/usr/bin/env bash
# A real single-node SLURM cluster for the workflow tests: munge, MariaDB, slurmdbd (accounting,
# which the Snakemake SLURM executor queries with sacct), slurmctld and slurmd, with two
# partitions `cpu`, `long` and `gpu` with the limits of profiles/slurm/partitions.yaml (finite
# MaxTime, MaxMemPerNode, MaxCPUsPerNode; tests/workflow/test_slurm_partitions.py checks that the two
# agree). Everything comes from Debian's apt; nothing else is downloaded.
#
#   eval "$(bash tests/cluster/start_slurm.sh)"     # starts it, exports SLURM_CONF
#   bash tests/cluster/stop_slurm.sh                # stops every daemon it started
#
# The node has no real GPU: it declares one generic resource `gpu` of type `a100` whose device
# file is /dev/null (gres.conf), so a job that asks for `--gpus=1`, `--gpus=a100:1` or
# `--gres=gpu:a100:1` is scheduled and accounted (AllocTRES gres/gpu=1) but finds no CUDA
# device and runs on CPU. The tests check where GPU jobs were sent and what
# they asked for, not that a GPU computed them.
#
# The configuration goes where SLURM looks by default, /etc/slurm (the executor's job steps
# drop SLURM_CONF from their environment, so a config elsewhere is not found inside a job); an
# /etc/slurm/slurm.conf this script did not write is never overwritten. State, logs and the
# database live in $CELLCONCEPTS_SLURM_STATE (default /tmp/cellconcepts-slurm). Progress goes
# to stderr, the environment to stdout.
set -euo pipefail

STATE="${CELLCONCEPTS_SLURM_STATE:-/tmp/cellconcepts-slurm}"
ETC=/etc/slurm
MARK="# Written by cellconcepts tests/cluster/start_slurm.sh"
CLUSTER=cellconcepts
ACCOUNT=cellconcepts
HOST="$(hostname -s)"
started=$(date +%s)

say() { echo "start_slurm: $*" >&2; }

if [[ $EUID -ne 0 ]]; then
    say "must run as root (it installs packages and starts daemons)"
    exit 1
fi

packages=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
for conf in slurm.conf slurmdbd.conf gres.conf; do
    if [[ -e $ETC/$conf ]] && ! grep -qF "$MARK" "$ETC/$conf"; then
        say "$ETC/$conf exists and was not written by this script; not touching it"
        exit 1
    fi
done
if ((${#missing[@]})); then
    say "installing ${missing[*]} from apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# A previous cluster from this script is stopped first, so that a rerun starts clean.
bash "$(dirname "$0")/stop_slurm.sh" >&2 || true
rm -rf "$STATE"
mkdir -p "$STATE"/{log,run,ctld,spool,mysql} "$ETC"
chmod 755 "$STATE"

# munge: the shared key that authenticates every SLURM message.
if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "using the munge daemon that is already running"
else
    mkdir -p "$STATE/run/munge"
    chown munge:munge "$STATE/run/munge"
    runuser -u munge -- /usr/sbin/munged --pid-file="$STATE/run/munge/munged.pid"
    munge -n | unmunge >/dev/null
fi

# MariaDB, private to this cluster: its own data directory and socket.
mysql_install_db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
    >"$STATE/log/mysql_install.log" 2>&1
chown -R mysql:mysql "$STATE/mysql"
MYSQL_SOCKET="$STATE/run/mysqld.sock"
chown mysql:mysql "$STATE/run"
mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$MYSQL_SOCKET" --skip-networking=0 \
    --bind-address=127.0.0.1 --port=3307 --pid-file="$STATE/run/mysqld.pid" \
    --log-error="$STATE/log/mysqld.log" >>"$STATE/log/mysqld.log" 2>&1 &
for _ in $(seq 60); do
    mariadb --socket="$MYSQL_SOCKET" -e "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.5
done
if ! mariadb --socket="$MYSQL_SOCKET" -e "SELECT 1" >/dev/null 2>&1; then
    say "MariaDB did not start within 30 s; see $STATE/log/mysqld.log"
    exit 1
fi
mariadb --socket="$MYSQL_SOCKET" <<'SQL'
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# Memory the node offers: what the machine has, less 2 GiB for the daemons and Snakemake.
mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048))
cpus=$(nproc)

cat >"$ETC/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 "$ETC/slurmdbd.conf"

cat >"$ETC/slurm.conf" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# Accounting through slurmdbd: sacct must still list a job long after it finished.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu,gres/gpu:a100
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
# A job that uses more memory than it asked for is killed (the tests rely on it).
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/none
# The rule name travels in the job comment; keep it in the accounting database.
AccountingStoreFlags=job_comment
# Finished jobs stay in slurmctld for 10 minutes (squeue/scontrol show job still see them).
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
# sbatch refuses a job that exceeds its partition's limits instead of leaving it pending
# forever (Reason=PartitionTimeLimit), as many sites do.
EnforcePartLimits=ALL
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:a100:1 State=UNKNOWN
# The partitions of profiles/slurm/partitions.yaml with its limits (the one node is smaller than
# they say; SLURM allows a limit above the node's size).
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=12:00:00 MaxMemPerNode=128000 MaxCPUsPerNode=32 State=UP
PartitionName=long Nodes=$HOST MaxTime=3-00:00:00 MaxMemPerNode=128000 MaxCPUsPerNode=32 State=UP
PartitionName=gpu Nodes=$HOST MaxTime=2-00:00:00 MaxMemPerNode=256000 MaxCPUsPerNode=32 State=UP
EOF

cat >"$ETC/gres.conf" <<EOF
$MARK
NodeName=$HOST Name=gpu Type=a100 File=/dev/null
EOF

export SLURM_CONF="$ETC/slurm.conf"

slurmdbd
for _ in $(seq 60); do
    sacctmgr -n list cluster >/dev/null 2>&1 && break
    sleep 0.5
done
if ! sacctmgr -n list cluster >/dev/null 2>&1; then
    say "slurmdbd did not answer within 30 s; see $STATE/log/slurmdbd.log"
    exit 1
fi
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" Description="cellconcepts tests" \
    Organization=cellconcepts >/dev/null
# Jobs are submitted as root (CI) or, under sudo, as the user who called it.
for user in "$(id -un)" ${SUDO_USER:+"$SUDO_USER"}; do
    sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
done

slurmctld
slurmd
for _ in $(seq 120); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
    [[ $state == idle ]] && break
    sleep 0.5
done
if [[ ${state:-} != idle ]]; then
    say "the node did not come up (state '${state:-none}'); logs in $STATE/log"
    tail -n 20 "$STATE"/log/slurm*.log >&2 || true
    exit 1
fi

# A job through both partitions proves scheduling, GPU accounting and sacct end to end.
job=$(sbatch --parsable -A "$ACCOUNT" -p gpu --gpus=1 -t 1 --mem=100 -o /dev/null --wrap true)
for _ in $(seq 60); do
    [[ $(sacct -n -X -j "$job" -o State%20 | tr -d ' ') == COMPLETED ]] && break
    sleep 0.5
done
if [[ $(sacct -n -X -j "$job" -o State%20 | tr -d ' ') != COMPLETED ]]; then
    say "the first job did not complete: $(sacct -n -X -j "$job" -o State%20,Reason%30)"
    exit 1
fi

say "cluster '$CLUSTER' up in $(($(date +%s) - started)) s (node $HOST: $cpus CPUs, $mem_mb MB, gres gpu:a100:1; partitions cpu, long, gpu; account $ACCOUNT)"
echo "export SLURM_CONF=$SLURM_CONF"
echo "export CELLCONCEPTS_SLURM_ACCOUNT=$ACCOUNT"
