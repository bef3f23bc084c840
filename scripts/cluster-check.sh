#!/usr/bin/env bash
# `make cluster-check`: the bot classifying on a Ray Serve cluster, with docker compose, for real.
#
# Builds the cluster image (verdict:cluster: a Ray node, no torch) and the slim bot image
# (verdict:slim), starts docker-compose.yml's `cluster` profile with a fresh volume —
# `docker compose --profile cluster up -d --scale ray-worker=N bot-cluster`: the bot, the head
# and N workers — against a stand-in Telegram Bot API (the sandbox) running on this machine,
# with a MODEL_TOKEN, so that the replicas' model downloads from the bot are authenticated. It
# times the start (head healthy, every node in the cluster, the bot's /readyz, the first
# answer), sends a photo and expects "espresso — N%", sends more photos from several users,
# shows which replicas on which nodes answered, restarts the head (the bot must deliver its model
# to the new cluster by itself), stops everything (timed, exit statuses) and prints the image
# sizes and each container's memory. Where no Docker engine can run it prints
# "skipped: <why>" and exits 0. Not part of `make test`.
#
# Uses scripts/compose-check.sh's functions: the engine, the compose plugin and the base image
# (made with debootstrap where Docker Hub is out of reach) come as there.
#
# Environment: BASE_IMAGE, TORCH_INDEX, DEBIAN_MIRROR as for compose-check.sh;
#   WORKERS (2): ray-worker containers; PHOTOS (20), PARALLEL (4): the photos after the first;
#   HEAD_RESTART (1): 0 skips the head's restart;
#   KEEP=1  leave the stack, its volume and the sandbox running at the end
set -euo pipefail

# shellcheck source=scripts/compose-check.sh
source "$(dirname "${BASH_SOURCE[0]}")/compose-check.sh"

PROJECT=verdict-cluster-check
WORKERS=${WORKERS:-2}
PHOTOS=${PHOTOS:-20}
PARALLEL=${PARALLEL:-4}
HEAD_RESTART=${HEAD_RESTART:-1}
CLUSTER_IMAGE=verdict:cluster
BOT_IMAGE=verdict:slim

# As compose-check.sh's, with the profile, and the interpolated settings (build arguments,
# ports, MODEL_TOKEN) apart from the bot's env file.
dc() {
    docker compose --project-name "$PROJECT" --profile cluster --env-file "$WORK/compose.env" \
        -f docker-compose.yml -f "$WORK/check.override.yml" "$@"
}

container() { dc ps -q "$1" | head -1; }
service_log() { dc logs --no-log-prefix "$1" 2>&1 | sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }
get() { curl -fsS --max-time 5 "$@"; }

# The Serve application's details from the head's dashboard (the REST API the bot uses).
serve_details() { get "http://127.0.0.1:$DASHBOARD_PORT/api/serve/applications/"; }

# How many nodes of the cluster are alive, by the dashboard's state API.
nodes_alive() {
    get "http://127.0.0.1:$DASHBOARD_PORT/api/v0/nodes" 2>/dev/null | json \
        'sum(1 for n in data["data"]["result"]["result"] if n["state"] == "ALIVE")' 2>/dev/null ||
        echo 0
}

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1" 2>/dev/null; }

photo_text() {
    curl -sS --max-time 90 -F photo=@"$1" -F user_id="$2" \
        "http://127.0.0.1:$SANDBOX_PORT/_sandbox/send?wait=60" | json 'data["replies"][0]["text"]' 2>/dev/null
}

# The replicas as the head sees them: "N: <replica> on <node ip> (<state>), ...".
replicas() {
    serve_details | "$PY" -c '
import json, sys
rs = json.load(sys.stdin)["applications"]["verdict"]["deployments"]["Classifier"]["replicas"]
print(f"{len(rs)}: " + ", ".join(r["replica_id"][:8] + " on " + r["node_ip"] + " (" + r["state"] + ")" for r in rs))'
}

memory_table() {
    local id
    for id in $(dc ps -q); do
        docker stats --no-stream --format '{{.Name}}	{{.MemUsage}}' "$id"
    done | sed -e "s/^$PROJECT-//" -e 's/^/    /' | sort
}

cluster_main() {
    check_prerequisites

    SANDBOX_PORT=$(free_port)
    BOT_PORT=$(free_port)
    DASHBOARD_PORT=$(free_port)
    SERVE_PORT=$(free_port)
    local token admin=4242 model_token
    token=$(made_up_token)
    model_token=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    (
        umask 077
        # The bot's settings (env_file); INFERENCE_URL and MODEL_BASE_URL come from the compose file.
        printf 'TELEGRAM_TOKEN=%s\nTELEGRAM_API_URL=http://host.docker.internal:%s\nADMIN_IDS=%s\nPORT=%s\nMODEL_TOKEN=%s\n' \
            "$token" "$SANDBOX_PORT" "$admin" "$BOT_PORT" "$model_token" >"$WORK/check.env"
        # What compose interpolates: build arguments, the published ports, the nodes' MODEL_TOKEN.
        printf 'BASE_IMAGE=%s\nTORCH_INDEX=%s\nENV_FILE=%s\nPORT=%s\nRAY_DASHBOARD_PORT=%s\nSERVE_PORT=%s\nMODEL_TOKEN=%s\n' \
            "$BASE_IMAGE" "$TORCH_INDEX" "$WORK/check.env" "$BOT_PORT" "$DASHBOARD_PORT" \
            "$SERVE_PORT" "$model_token" >"$WORK/compose.env"
    )
    # The sandbox runs on this machine; the bot reaches it through the host gateway.
    printf 'services:\n  bot-cluster:\n    extra_hosts: ["host.docker.internal:host-gateway"]\n' \
        >"$WORK/check.override.yml"

    say "building $CLUSTER_IMAGE and $BOT_IMAGE (base $BASE_IMAGE; the slim image's default is compiled in the full install, torch from $TORCH_INDEX)"
    local t0
    t0=$(now)
    dc --progress plain build ray-head bot-cluster >"$WORK/build.log" 2>&1 || {
        tail -30 "$WORK/build.log"
        fail "the build failed"
    }
    ok "built in $(elapsed "$t0" "$(now)") s"
    local cluster_size bot_size
    cluster_size=$(docker image inspect -f '{{.Size}}' "$CLUSTER_IMAGE")
    bot_size=$(docker image inspect -f '{{.Size}}' "$BOT_IMAGE")
    ok "$CLUSTER_IMAGE: $(mb "$cluster_size"); $BOT_IMAGE: $(mb "$bot_size")"
    if docker run --rm "$CLUSTER_IMAGE" python -c "import torch" >/dev/null 2>&1; then
        fail "torch imports in the cluster image"
    fi
    ok "no torch in $CLUSTER_IMAGE; $(docker run --rm "$CLUSTER_IMAGE" ray --version)"

    start_sandbox "$token" "$admin"

    say "starting: docker compose --profile cluster up -d --scale ray-worker=$WORKERS bot-cluster (a fresh volume)"
    dc down --volumes --remove-orphans >/dev/null 2>&1 || true
    STACK_UP=1
    t0=$(now)
    dc up -d --scale ray-worker="$WORKERS" bot-cluster >"$WORK/up.log" 2>&1 || {
        cat "$WORK/up.log"
        fail "docker compose up failed"
    }
    local head bot
    head=$(container ray-head)
    bot=$(container bot-cluster)
    local running
    running=$(dc ps -q ray-worker | wc -l)
    [ "$running" = "$WORKERS" ] || fail "$running ray-worker containers, not $WORKERS"
    ok "up in $(elapsed "$t0" "$(now)") s: ray-head, $running ray-worker, bot-cluster"

    # Each moment once, counted from `up`: the head's health check (the application RUNNING),
    # every node alive, the bot's /readyz.
    local head_s='' nodes_s='' ready_s='' deadline=$((SECONDS + 300)) status
    while [ -z "$head_s" ] || [ -z "$nodes_s" ] || [ -z "$ready_s" ]; do
        if [ -z "$head_s" ] && [ "$(health "$head")" = healthy ]; then
            head_s=$(elapsed "$t0" "$(now)")
        fi
        if [ -z "$nodes_s" ] && [ "$(nodes_alive)" = $((WORKERS + 1)) ]; then
            nodes_s=$(elapsed "$t0" "$(now)")
        fi
        if [ -z "$ready_s" ] && curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$BOT_PORT/readyz"; then
            ready_s=$(elapsed "$t0" "$(now)")
        fi
        for id in "$head" "$bot"; do
            status=$(docker inspect -f '{{.State.Status}}' "$id")
            if [ "$status" != running ]; then
                dc logs --tail 30 2>&1 | tail -40
                fail "a container stopped ($status)"
            fi
        done
        if [ "$SECONDS" -ge "$deadline" ]; then
            service_log ray-head | tail -20 | sed 's/^/  ray-head: /'
            service_log bot-cluster | tail -30 | sed 's/^/  bot: /'
            fail "not ready after 300 s (head healthy: ${head_s:-no}, nodes: $(nodes_alive)/$((WORKERS + 1)), bot ready: ${ready_s:-no})"
        fi
        sleep 0.5
    done
    ok "ray-head healthy (application RUNNING) after $head_s s; all $((WORKERS + 1)) nodes alive after $nodes_s s; bot /readyz 200 after $ready_s s"
    local ready
    ready=$(get "http://127.0.0.1:$BOT_PORT/readyz")
    ok "/readyz: $ready"
    service_log bot-cluster | grep -i -E "remote|cluster|inference|deliver|swap|serving|ready in" | head -8 |
        sed 's/^/  log: /' || true
    local processes
    processes=$(docker top "$bot" -eo pid,args | grep -c python || true)
    ok "python processes in the bot's container: $processes (no local workers)"
    ok "replicas: $(replicas)"

    say "sending a photo through the sandbox"
    "$PY" -c "import sys; from tests.images import coffee_jpeg; open(sys.argv[1], 'wb').write(coffee_jpeg())" "$WORK/coffee.jpg"
    local text first_s
    text=$(photo_text "$WORK/coffee.jpg" 1001) || true
    first_s=$(elapsed "$t0" "$(now)")
    [[ $text =~ ^espresso\ —\ [0-9]+%$ ]] || {
        service_log bot-cluster | tail -20 | sed 's/^/  bot: /'
        fail "unexpected answer: ${text:-none}"
    }
    ok "answered: $text ($first_s s after up)"
    local route
    route=$(serve_details | json 'data["applications"]["verdict"]["route_prefix"]')
    ok "a replica's /info: $(get "http://127.0.0.1:$SERVE_PORT${route%/}/info" | json '"version %s, %s, %s, pid %s, counts %s" % (data["version"], data["backend"], data["name"], data["pid"], data["counts"])')"

    say "sending $PHOTOS more photos ($PARALLEL at a time, one user each)"
    make_photos "$PHOTOS"
    local t1 took answered
    t1=$(now)
    send_photos "$PHOTOS" 30000 90 120
    took=$(elapsed "$t1" "$(now)")
    answered=$(count_answers "$PHOTOS")
    ok "answered $answered of $PHOTOS in $took s"
    [ "$answered" = "$PHOTOS" ] || fail "only $answered of $PHOTOS photos were answered"
    ok "replicas: $(replicas)"
    say "memory per container (docker stats)"
    memory_table

    local restart_s=''
    if [ "$HEAD_RESTART" = 1 ]; then
        say "restarting the head (docker compose restart ray-head): a new cluster, no model on it"
        t1=$(now)
        dc restart ray-head >/dev/null 2>&1
        deadline=$((SECONDS + 300))
        until [ "$(health "$head")" = healthy ]; do
            [ "$SECONDS" -lt "$deadline" ] || fail "the head is not healthy 300 s after its restart"
            sleep 0.5
        done
        ok "head healthy again after $(elapsed "$t1" "$(now)") s"
        deadline=$((SECONDS + 300))
        local tries=0
        while :; do
            tries=$((tries + 1))
            text=$(photo_text "$WORK/coffee.jpg" 1002) || true
            [[ $text =~ ^espresso\ —\ [0-9]+%$ ]] && break
            if [ "$SECONDS" -ge "$deadline" ]; then
                service_log bot-cluster | tail -25 | sed 's/^/  bot: /'
                fail "no answer within 300 s of the head's restart (last reply: ${text:-none})"
            fi
            sleep 2
        done
        restart_s=$(elapsed "$t1" "$(now)")
        local earlier=''
        [ "$tries" = 1 ] || earlier=" (after $((tries - 1)) photo(s) answered otherwise)"
        ok "answered again $restart_s s after the restart$earlier: $text"
        ok "nodes alive: $(nodes_alive) of $((WORKERS + 1)); replicas: $(replicas)"
    fi

    say "stopping (docker compose stop: SIGTERM to each container)"
    local ids
    ids=$(dc ps -q)
    t1=$(now)
    dc stop >/dev/null 2>&1
    local stop_s
    stop_s=$(elapsed "$t1" "$(now)")
    local codes
    codes=$(for id in $ids; do docker inspect -f '{{.Name}}={{.State.ExitCode}}' "$id"; done |
        sed "s|^/$PROJECT-||" | sort)
    ok "stopped in $stop_s s; exit statuses: $(tr '\n' ' ' <<<"$codes")"
    if grep -q -v -E '=0$' <<<"$codes"; then fail "a container did not exit 0"; fi
    service_log bot-cluster | grep -q "stopped cleanly" || fail "no clean stop in the bot's log"

    take_down
    echo
    echo "cluster check passed: $CLUSTER_IMAGE $(mb "$cluster_size"), $BOT_IMAGE $(mb "$bot_size");" \
        "head + $WORKERS workers, bot ready $ready_s s after up, first answer at $first_s s," \
        "$answered/$PHOTOS more photos in $took s${restart_s:+, answering again $restart_s s after a head restart}," \
        "stopped in $stop_s s"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cluster_main "$@"
fi
