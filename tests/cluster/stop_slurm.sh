#!/usr/bin/env bash
# Stop the test cluster that start_slurm.sh started: slurmd, slurmctld, slurmdbd, MariaDB, munge.
# Safe to run when nothing is running; the state folder is left for its logs.
STATE="${CELLCONCEPTS_SLURM_STATE:-/tmp/cellconcepts-slurm}"

stop() { # stop <pid file>
    local pid
    [[ -s $1 ]] || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

if [[ -s $STATE/run/slurmctld.pid ]]; then
    # Jobs still queued or running are cancelled, so no job outlives its cluster.
    scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
fi
stop "$STATE/run/slurmd.pid"
stop "$STATE/run/slurmctld.pid"
stop "$STATE/run/slurmdbd.pid"
stop "$STATE/run/mysqld.pid"
if [[ -s /run/munge/munged.pid ]]; then
    stop /run/munge/munged.pid
fi
exit 0
