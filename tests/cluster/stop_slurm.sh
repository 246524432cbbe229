#!/usr/bin/env bash
# Stop the test cluster that start_slurm.sh started: slurmd, slurmctld, slurmdbd, MariaDB and
# munge, each only if its PID file in the state folder names a live process of that program.
# Nothing is done where /etc/slurm/slurm.conf is not the one start_slurm.sh wrote. Safe to run
# when nothing is running; the state folder is kept for its logs.
STATE="${CELLCONCEPTS_SLURM_STATE:-/tmp/cellconcepts-slurm}"
MARK="# Written by cellconcepts tests/cluster/start_slurm.sh"

if [[ -e /etc/slurm/slurm.conf ]] && ! grep -qF "$MARK" /etc/slurm/slurm.conf; then
    echo "stop_slurm: /etc/slurm/slurm.conf is not the test cluster's; nothing stopped" >&2
    exit 0
fi

stop() { # stop <pid file> <program name as in /proc/PID/comm>
    local pid
    [[ -s $1 ]] || return 0
    pid=$(cat "$1")
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && kill -9 "$pid" 2>/dev/null
    return 0
}

if [[ $(cat "/proc/$(cat "$STATE/run/slurmctld.pid" 2>/dev/null)/comm" 2>/dev/null) == slurmctld ]]; then
    # Jobs still queued or running are cancelled, so no job outlives its cluster.
    scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
fi
stop "$STATE/run/slurmd.pid" slurmd
stop "$STATE/run/slurmctld.pid" slurmctld
stop "$STATE/run/slurmdbd.pid" slurmdbd
stop "$STATE/run/mysqld.pid" mariadbd
stop "$STATE/run/munge/munged.pid" munged
exit 0
