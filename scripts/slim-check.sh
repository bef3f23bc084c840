#!/usr/bin/env bash
# `make slim-check`: build the slim image (serves compiled versions only: no torch, no
# fastai) and run it in a small box, for real.
#
# Builds verdict:slim (docker compose, VERDICT_TARGET=slim: the full install compiles the
# bundled default at build time and bundles it without its learner), prints its size, runs it
# with `docker run --memory 512m --memory-swap 512m --cpus 1` against a sandbox Bot API on
# this machine, sends 100 photos (from 100 users, a few at a time), checks that every one was
# answered with a label and a confidence and that the container was not OOM-killed, and
# prints the peak memory (the container's cgroup). Where no Docker engine can run it prints
# "skipped: <why>" and exits 0. Not part of `make test`.
#
# Uses scripts/compose-check.sh's functions: the engine, the compose plugin and the base image
# (made with debootstrap where Docker Hub is out of reach) come as there.
#
# Environment: BASE_IMAGE, TORCH_INDEX, DEBIAN_MIRROR as for compose-check.sh;
#   PHOTOS (100), PARALLEL (4), MEMORY (512m), MAX_IMAGE_MB (500): the size the image must stay under
#   KEEP=1  leave the container and the sandbox running at the end
set -euo pipefail

# shellcheck source=scripts/compose-check.sh
source "$(dirname "$0")/compose-check.sh"

PHOTOS=${PHOTOS:-100}
PARALLEL=${PARALLEL:-4}
MEMORY=${MEMORY:-512m}
MAX_IMAGE_MB=${MAX_IMAGE_MB:-500}
IMAGE=verdict:slim
NAME=verdict-slim-check-$$
RUNNING=

slim_cleanup() {
    local status=$?
    if [ -n "$RUNNING" ] && [ "${KEEP:-}" != 1 ]; then
        docker rm -f "$NAME" >/dev/null 2>&1 || true
    fi
    (exit "$status")
    cleanup
}
trap slim_cleanup EXIT

peak_bytes() {
    # cgroup v2: memory.peak; v1: memory.max_usage_in_bytes (both since the container began).
    docker exec "$NAME" sh -c 'cat /sys/fs/cgroup/memory.peak 2>/dev/null ||
        cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes' 2>/dev/null || echo 0
}

slim_main() {
    check_prerequisites

    SANDBOX_PORT=$(free_port)
    BOT_PORT=$(free_port)
    local token admin=4242
    token=$(made_up_token)
    (
        umask 077
        printf 'TELEGRAM_TOKEN=%s\nTELEGRAM_API_URL=http://host.docker.internal:%s\nADMIN_IDS=%s\nPORT=%s\n' \
            "$token" "$SANDBOX_PORT" "$admin" "$BOT_PORT" >"$WORK/check.env"
        # What compose interpolates: the build only (the container runs with docker run).
        printf 'VERDICT_TARGET=slim\nVERDICT_IMAGE=%s\nBASE_IMAGE=%s\nTORCH_INDEX=%s\nENV_FILE=%s\n' \
            "$IMAGE" "$BASE_IMAGE" "$TORCH_INDEX" "$WORK/check.env" >"$WORK/build.env"
    )

    say "building $IMAGE (base $BASE_IMAGE; the full install it compiles in takes torch from $TORCH_INDEX)"
    local t0
    t0=$(now)
    docker compose --project-name verdict-slim-check --env-file "$WORK/build.env" \
        -f docker-compose.yml --progress plain build bot >"$WORK/build.log" 2>&1 || {
        tail -30 "$WORK/build.log"
        fail "the build failed"
    }
    ok "built in $(elapsed "$t0" "$(now)") s"
    local size
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    ok "$IMAGE: $(mb "$size") (limit $MAX_IMAGE_MB MB)"
    [ "$size" -le $((MAX_IMAGE_MB * 1000000)) ] || fail "the slim image is over $MAX_IMAGE_MB MB"
    if docker run --rm "$IMAGE" python -c "import torch" >/dev/null 2>&1; then
        fail "torch imports in the slim image"
    fi
    ok "no torch in it"

    start_sandbox "$token" "$admin"

    say "running it: --memory $MEMORY --cpus 1, a fresh volume"
    RUNNING=1
    docker run -d --name "$NAME" --memory "$MEMORY" --memory-swap "$MEMORY" --cpus 1 \
        --add-host host.docker.internal:host-gateway --env-file "$WORK/check.env" \
        -p "127.0.0.1:$BOT_PORT:$BOT_PORT" "$IMAGE" >/dev/null
    local status deadline=$((SECONDS + 300))
    t0=$(now)
    while :; do
        status=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$NAME")
        case $status in
        "running healthy") break ;;
        exited* | dead*)
            docker logs "$NAME" 2>&1 | tail -30
            fail "the container stopped ($status)"
            ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || {
            docker logs "$NAME" 2>&1 | tail -30
            fail "not healthy after 300 s ($status)"
        }
        sleep 0.5
    done
    ok "healthy after $(elapsed "$t0" "$(now)") s"
    local ready
    ready=$(curl -fsS "http://127.0.0.1:$BOT_PORT/readyz")
    ok "/readyz: $ready"
    docker logs "$NAME" 2>&1 | grep -E "seed|serving|pool:|ready in" | sed 's/^/  log: /'
    ok "memory at rest: $(docker stats --no-stream --format '{{.MemUsage}}' "$NAME")"

    say "sending $PHOTOS photos ($PARALLEL at a time, one user each)"
    make_photos "$PHOTOS"
    t0=$(now)
    send_photos "$PHOTOS" 20000 180 200
    local took answered
    took=$(elapsed "$t0" "$(now)")
    answered=$(count_answers "$PHOTOS")
    local oom peak
    oom=$(docker inspect -f '{{.State.OOMKilled}}' "$NAME")
    peak=$(peak_bytes)
    ok "answered $answered of $PHOTOS in $took s"
    ok "OOM-killed: $oom; peak memory $(mb "$peak") (limit $MEMORY); now $(docker stats --no-stream --format '{{.MemUsage}}' "$NAME")"
    ok "restarts: $(docker inspect -f '{{.RestartCount}}' "$NAME"), status $(docker inspect -f '{{.State.Status}}' "$NAME")"
    [ "$oom" = false ] || fail "the container was OOM-killed"
    [ "$answered" = "$PHOTOS" ] || fail "only $answered of $PHOTOS photos were answered"
    if docker logs "$NAME" 2>&1 | grep -q -E "worker .*(died|exited|killed)"; then
        docker logs "$NAME" 2>&1 | grep -E "worker .*(died|exited|killed)" | head -3 | sed 's/^/  log: /'
        fail "a worker died during the run"
    fi

    echo
    echo "slim check passed: $IMAGE $(mb "$size"), $answered/$PHOTOS photos answered in $took s" \
        "under --memory $MEMORY --cpus 1, peak $(mb "$peak"), not OOM-killed"
}

slim_main "$@"
