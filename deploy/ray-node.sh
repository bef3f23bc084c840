#!/usr/bin/env bash
# One Ray node of the inference cluster, in the foreground: the cluster image's command
# (Dockerfile target `cluster`; docker-compose.yml's ray-head and ray-worker services).
#
#   ray-node.sh head [RAY START FLAGS...]
#       Starts the head (its GCS on RAY_HEAD_PORT, the dashboard and its REST API on
#       0.0.0.0:RAY_DASHBOARD_PORT), waits until the dashboard answers, deploys the Serve config
#       (python -m model.serve_app deploy: the proxy on port 8000 of every node, replicas that
#       answer 503 until the bot delivers its model) and then stays with the node.
#   ray-node.sh worker HEAD_HOST:PORT [RAY START FLAGS...]
#       Waits until the head's GCS answers, joins it and stays with the node.
#
# Extra flags go to `ray start` as they are, e.g. --num-cpus=0 to keep replicas off the head,
# --num-cpus=N to offer N of a box's cores.
#
# Ray's object store is given 90% of /dev/shm (Docker's --shm-size, compose's shm_size) unless
# the flags say --object-store-memory: by default Ray asks for 30% of the host's memory and,
# finding /dev/shm smaller, moves the store to disk.
#
# Stopping: SIGTERM or SIGINT (docker stop, docker compose stop) goes to `ray start --block`,
# which stops every process it started; the script then exits 0. A worker first drains (its
# replicas move to other nodes, its proxy stops taking requests) for at most
# RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (10 s); the head does not (0: it holds the Serve
# controller, so it never drains idle). When the node ends by itself (a Ray process died, a
# worker lost its head) or the deployment failed, the script exits 1 and the restart policy
# starts it again: a head deploys again, and the bot delivers its model again.
#
# Environment: RAY_HEAD_PORT (6379), RAY_DASHBOARD_PORT (8265), SERVE_CONFIG (serve.yaml beside
#   this script), DEPLOY_TIMEOUT (300: seconds the application may take to be RUNNING),
#   JOIN_TIMEOUT (120: seconds a worker waits for the head).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dashboard_port=${RAY_DASHBOARD_PORT:-8265}

usage() {
    echo "usage: ray-node.sh head [RAY START FLAGS...]" >&2
    echo "       ray-node.sh worker HEAD_HOST:PORT [RAY START FLAGS...]" >&2
    exit 2
}
log() { echo "ray-node: $*"; }

role=${1:-}
[ $# -gt 0 ] && shift
case $role in
head)
    flags=(--head --port="${RAY_HEAD_PORT:-6379}"
        --dashboard-host=0.0.0.0 --dashboard-port="$dashboard_port")
    drain=0
    ;;
worker)
    [ $# -gt 0 ] || usage
    address=$1
    shift
    flags=(--address="$address")
    drain=10
    ;;
*) usage ;;
esac
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-$drain}

case " $* " in
*" --object-store-memory"*) ;;
*)
    shm='import os; s = os.statvfs("/dev/shm"); print(max(80 * 2**20, int(s.f_frsize * s.f_blocks * 0.9)))'
    flags+=(--object-store-memory="$(python -c "$shm")")
    ;;
esac

ray_pid=
deploy_pid=
stopping=

stop() {
    stopping=1
    if [ -n "$deploy_pid" ]; then kill -TERM "$deploy_pid" 2>/dev/null || true; fi
    if [ -n "$ray_pid" ]; then kill -TERM "$ray_pid" 2>/dev/null || true; fi
}
trap stop TERM INT

# The exit status of background process $1. A trapped signal cuts `wait` short (status above
# 128 while the process is still there, a zombie included): wait again.
reap() {
    local status
    while :; do
        status=0
        wait "$1" || status=$?
        if [ "$status" -gt 128 ] && kill -0 "$1" 2>/dev/null; then
            continue
        fi
        return "$status"
    done
}

alive() { [ -z "$stopping" ] && kill -0 "$ray_pid" 2>/dev/null; }

# Run a check (a Python one-liner's code, then its arguments) every second until it succeeds,
# for at most $1 seconds; stops early when told to stop (or, with `ray start` running, if it
# ended).
poll() {
    local limit=$1 code=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until python -c "$code" "$@" 2>/dev/null; do
        [ -z "$stopping" ] || return 1
        if [ -n "$ray_pid" ] && ! kill -0 "$ray_pid" 2>/dev/null; then return 1; fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1
    done
}

if [ "$role" = worker ]; then
    log "waiting for the head at $address"
    tcp='import socket, sys; h, _, p = sys.argv[1].rpartition(":"); socket.create_connection((h, int(p)), 2).close()'
    if ! poll "${JOIN_TIMEOUT:-120}" "$tcp" "$address"; then
        [ -n "$stopping" ] && exit 0
        log "the head at $address does not answer after ${JOIN_TIMEOUT:-120} s"
        exit 1
    fi
fi

ray start "${flags[@]}" --block "$@" &
ray_pid=$!

if [ "$role" = head ]; then
    url=http://127.0.0.1:$dashboard_port
    answers='import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).read()'
    if poll 120 "$answers" "$url/api/serve/applications/"; then
        python -m model.serve_app deploy --address "$url" \
            --config "${SERVE_CONFIG:-$here/serve.yaml}" --timeout "${DEPLOY_TIMEOUT:-300}" &
        deploy_pid=$!
        deployed=0
        reap "$deploy_pid" || deployed=$?
        deploy_pid=
        if [ "$deployed" != 0 ] && alive; then
            log "the deployment failed (status $deployed): stopping the head"
            stop
            stopping=
        fi
    elif alive; then
        log "the dashboard at $url does not answer after 120 s: stopping the head"
        stop
        stopping=
    fi
fi

status=0
reap "$ray_pid" || status=$?
if [ -n "$stopping" ]; then
    log "stopped"
    exit 0
fi
log "the node ended (ray start: status $status)"
exit 1
