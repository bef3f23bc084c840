#!/usr/bin/env bash
# `make compose-check`: build the image and run it with docker compose, for real.
#
# Builds verdict:latest through docker compose, starts it with a fresh volume against a
# stand-in Telegram Bot API (the sandbox, `python -m sandbox`) running on this machine, waits
# for Docker to call it healthy, sends a photo from this machine, restarts the stack
# (down/up) and taps the answer's button to show that the feedback log survived, checks that
# the volume holds the model once, the worker count under `--cpus 1`, a bind mount the image's
# user cannot write and a start without a token, stops it (timed), and prints the image size
# and memory use. Where no Docker engine can run it prints "skipped: <why>" and exits 0.
# Not part of `make test`.
#
# As root on Debian it installs what is missing: docker.io, the compose v2 plugin (Debian 13's
# docker-compose package; Debian 12 has none), debootstrap; and it starts dockerd when none
# runs (and stops it again at the end).
#
# Environment:
#   BASE_IMAGE   the Dockerfile's base (default python:3.11-slim when it can be had, else
#                verdict-base:bookworm, made here with debootstrap and `docker import`)
#   TORCH_INDEX  where torch comes from (default: the PyTorch CPU index when it answers,
#                else PyPI, whose build carries CUDA: a much larger image)
#   DEBIAN_MIRROR  for debootstrap (default http://deb.debian.org/debian)
#   KEEP=1       leave the stack, its volume and the sandbox running at the end
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PROJECT=verdict-check
LOCAL_BASE=verdict-base:bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CPU_INDEX=https://download.pytorch.org/whl/cpu
WORK=$(mktemp -d /tmp/verdict-compose-check.XXXXXX)
DOCKERD_PID=
SANDBOX_PID=
STACK_UP=

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
skip() {
    echo "skipped: $*"
    exit 0
}
fail() {
    echo "FAILED: $*" >&2
    exit 1
}
is_root() { [ "$(id -u)" = 0 ]; }
can_apt() { is_root && command -v apt-get >/dev/null; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Run "$@" until it succeeds, for at most $1 seconds.
wait_for() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

cleanup() {
    local status=$?
    if [ -n "$STACK_UP" ] && [ "${KEEP:-}" != 1 ]; then
        dc down --volumes --remove-orphans >/dev/null 2>&1 || true
    fi
    if [ -n "$SANDBOX_PID" ] && [ "${KEEP:-}" != 1 ]; then
        kill "$SANDBOX_PID" 2>/dev/null || true
    fi
    if [ -n "$DOCKERD_PID" ] && [ "${KEEP:-}" != 1 ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
    fi
    if [ "$status" = 0 ] || [ "${KEEP:-}" = 1 ]; then
        rm -rf "$WORK"
    else
        echo "logs kept in $WORK" >&2
    fi
}
trap cleanup EXIT

# ----------------------------------------------------------------------------- the engine

ensure_engine() {
    if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
        can_apt || skip "no Docker engine here (install Docker, or run this as root on Debian)"
        say "installing docker.io (Debian's Docker engine)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; } \
            >"$WORK/apt.log" 2>&1 || skip "docker.io does not install here ($(tail -1 "$WORK/apt.log"))"
    fi
    docker info >/dev/null 2>&1 && return
    is_root || skip "no Docker engine answers, and only root may start one"
    say "starting dockerd (no engine was running; it is stopped again at the end)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    if ! wait_for 60 docker info; then
        DOCKERD_PID=
        skip "dockerd does not start here: $(tail -1 "$WORK/dockerd.log")"
    fi
}

# Debian 12 packages no compose v2; Debian 13's docker-compose package is the v2 plugin (one
# static binary). Fetched with a private apt configuration: the system's sources stay as
# they are.
ensure_compose() {
    docker compose version >/dev/null 2>&1 && return
    can_apt || skip "the docker compose v2 plugin is missing (install docker-compose-plugin)"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose-v2 >/dev/null 2>&1 &&
        docker compose version >/dev/null 2>&1; then
        return # Ubuntu's package
    fi
    say "installing the compose v2 plugin from Debian 13 (trixie)'s docker-compose package"
    local apt="$WORK/apt-trixie"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR trixie main" \
        >"$apt/sources.list"
    local options=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
    if ! { apt-get "${options[@]}" update -qq &&
        (cd "$apt" && apt-get "${options[@]}" download docker-compose) &&
        dpkg -i "$apt"/docker-compose_*.deb; } >"$WORK/compose-plugin.log" 2>&1; then
        skip "no compose v2 plugin could be installed (see $WORK/compose-plugin.log)"
    fi
    docker compose version >/dev/null 2>&1 || skip "docker compose still does not run"
}

# ----------------------------------------------------------------------------- the base image

# A minimal Debian 12 with python3 and its venv module, where Docker Hub's python image cannot
# be pulled. It trusts the certificate authorities this machine added
# (/usr/local/share/ca-certificates, e.g. a TLS-inspecting proxy in front of PyPI), as pip in
# the build must.
make_base() {
    is_root || fail "making $LOCAL_BASE needs root (debootstrap); or set BASE_IMAGE"
    if ! command -v debootstrap >/dev/null; then
        if ! { can_apt && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }; then
            fail "debootstrap is missing"
        fi
    fi
    local root="$WORK/rootfs"
    say "making $LOCAL_BASE: debootstrap Debian 12 with python3 and venv, then docker import"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        fail "debootstrap failed (see $WORK/debootstrap.log)"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$root"
    ok "$LOCAL_BASE: $(docker image inspect -f '{{.Size}}' "$LOCAL_BASE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

choose_base() {
    if [ -n "${BASE_IMAGE:-}" ]; then
        if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
            return
        elif [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then
            make_base
        elif ! timeout 300 docker pull -q "$BASE_IMAGE" >/dev/null; then
            fail "the base image $BASE_IMAGE cannot be pulled"
        fi
        return
    fi
    for candidate in python:3.11-slim "$LOCAL_BASE"; do
        if docker image inspect "$candidate" >/dev/null 2>&1; then
            BASE_IMAGE=$candidate
            return
        fi
    done
    if timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then
        BASE_IMAGE=python:3.11-slim
    else
        say "python:3.11-slim cannot be pulled (no Docker Hub from here)"
        BASE_IMAGE=$LOCAL_BASE
        make_base
    fi
}

# The PyTorch CPU index when it answers, else PyPI (whose build carries CUDA).
choose_torch_index() {
    if [ -z "${TORCH_INDEX:-}" ]; then
        if curl -fs -o /dev/null --connect-timeout 5 --max-time 15 "$CPU_INDEX/torch/"; then
            TORCH_INDEX=$CPU_INDEX
        else
            TORCH_INDEX=https://pypi.org/simple
            say "the PyTorch CPU index does not answer: torch comes from PyPI (CUDA build)"
        fi
    fi
}

# ----------------------------------------------------------------------------- the stack

dc() {
    docker compose --project-name "$PROJECT" --env-file "$WORK/check.env" \
        -f docker-compose.yml -f "$WORK/check.override.yml" "$@"
}

container() { dc ps -q bot; }

# The bot's log, without the terminal escapes compose adds.
bot_log() { dc logs --no-log-prefix bot 2>&1 | sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }

# Wait until Docker calls the container healthy; sets READY_S (start to the first 200 from
# /readyz, polled from this machine) and HEALTHY_S (start to Docker's "healthy").
wait_healthy() {
    local id started status ready_at='' deadline=$((SECONDS + 300))
    id=$(container)
    started=$(date -d "$(docker inspect -f '{{.State.StartedAt}}' "$id")" +%s.%N)
    while :; do
        status=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
        if [ -z "$ready_at" ] && curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$BOT_PORT/readyz"; then
            ready_at=$(now)
        fi
        case $status in
        "running healthy") [ -n "$ready_at" ] && break ;;
        exited* | dead*)
            dc logs bot | tail -30
            fail "the container stopped ($status)"
            ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || {
            dc logs bot | tail -30
            fail "not healthy after 300 s ($status)"
        }
        sleep 0.5
    done
    READY_S=$(elapsed "$started" "$ready_at")
    HEALTHY_S=$(elapsed "$started" "$(now)")
}

json() { "$PY" -c "import json, sys; data = json.load(sys.stdin); print($1)"; }

# ------------------------------------------------- what every check shares (slim, cluster too)

mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1e6 }'; }

# curl and the venv's python, the engine, the compose plugin, the base image, torch's index.
check_prerequisites() {
    command -v curl >/dev/null || skip "curl is missing"
    [ -x "$PY" ] || skip "no $PY (run make setup first: the sandbox and the photos need it)"
    ensure_engine
    ensure_compose
    say "engine: Docker $(docker version -f '{{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /')"
    choose_base
    choose_torch_index
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

# A made-up bot token, known to the sandbox and the bot only; never printed.
made_up_token() {
    echo "$((RANDOM * 32768 + RANDOM + 100000000)):check-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
}

# start_sandbox TOKEN ADMIN: the sandbox Bot API on SANDBOX_PORT, on every interface (the
# containers reach it through the host gateway), until the check ends.
start_sandbox() {
    "$PY" -m sandbox --host 0.0.0.0 --port "$SANDBOX_PORT" --token "$1" --admin-id "$2" \
        >"$WORK/sandbox.log" 2>&1 &
    SANDBOX_PID=$!
    wait_for 30 curl -fsS -o /dev/null "http://127.0.0.1:$SANDBOX_PORT/_sandbox/info" ||
        fail "the sandbox did not start: $(tail -1 "$WORK/sandbox.log")"
    ok "sandbox Bot API on port $SANDBOX_PORT (0.0.0.0)"
}

# make_photos COUNT: coffee and the cat in sizes from thumbnails to phone photos, in $WORK/photos.
make_photos() {
    rm -rf "$WORK/photos" "$WORK/replies"
    mkdir -p "$WORK/photos" "$WORK/replies"
    "$PY" - "$WORK/photos" "$1" <<'EOF'
import sys
from pathlib import Path

from tests.images import chelsea, coffee

folder, count = Path(sys.argv[1]), int(sys.argv[2])
for i in range(count):
    image = (coffee() if i % 2 == 0 else chelsea()).copy()
    side = 160 + (i * 37) % 1200  # sizes from thumbnails to phone photos
    image = image.resize((side, max(1, side * image.height // image.width)))
    image.save(folder / f"{i}.jpg", quality=85)
EOF
}

# send_photos COUNT FIRST_USER WAIT_S MAX_S: the photos, PARALLEL at a time, one user each
# (FIRST_USER, FIRST_USER + 1, ...); each reply in $WORK/replies.
send_photos() {
    export FIRST_USER=$2 WAIT_S=$3 MAX_S=$4 SANDBOX_PORT WORK
    seq 0 $(($1 - 1)) | xargs -P "$PARALLEL" -I{} sh -c \
        'curl -sS --max-time "$MAX_S" -F photo=@"$WORK/photos/{}.jpg" -F user_id=$((FIRST_USER + {})) \
            "http://127.0.0.1:$SANDBOX_PORT/_sandbox/send?wait=$WAIT_S" >"$WORK/replies/{}.json" || true'
}

# count_answers COUNT: how many replies name a label and a confidence (a few others on stderr).
count_answers() {
    "$PY" - "$WORK/replies" "$1" <<'EOF'
import json
import re
import sys
from pathlib import Path

folder, count = Path(sys.argv[1]), int(sys.argv[2])
good, bad = 0, []
for i in range(count):
    try:
        text = json.loads((folder / f"{i}.json").read_text())["replies"][0]["text"]
    except (OSError, ValueError, KeyError, IndexError):
        bad.append(f"{i}: no reply")
        continue
    # "espresso — 94%", or below the threshold "Not sure: espresso 39%, consomme 23%, ..."
    if re.search(r"^\S.* — \d+%$|^Not sure: .*\d+%", text):
        good += 1
    else:
        bad.append(f"{i}: {text[:80]!r}")
print(good)
for line in bad[:5]:
    print("  " + line, file=sys.stderr)
EOF
}

# The stack, its volume and dangling images go, unless KEEP=1.
take_down() {
    if [ "${KEEP:-}" != 1 ]; then
        dc down --volumes --remove-orphans >/dev/null 2>&1
        STACK_UP=
        docker image prune -f >/dev/null
    fi
}

main() {
    check_prerequisites
    export BASE_IMAGE TORCH_INDEX
    export ENV_FILE="$WORK/check.env"

    SANDBOX_PORT=$(free_port)
    BOT_PORT=$(free_port)
    local token admin=4242
    token=$(made_up_token)
    (
        umask 077
        printf 'TELEGRAM_TOKEN=%s\nTELEGRAM_API_URL=http://host.docker.internal:%s\nADMIN_IDS=%s\nPORT=%s\n' \
            "$token" "$SANDBOX_PORT" "$admin" "$BOT_PORT" >"$WORK/check.env"
    )
    # The sandbox runs on this machine; the container reaches it through the host gateway.
    printf 'services:\n  bot:\n    extra_hosts: ["host.docker.internal:host-gateway"]\n' \
        >"$WORK/check.override.yml"
    start_sandbox "$token" "$admin"

    say "building verdict:latest (base $BASE_IMAGE, torch from $TORCH_INDEX)"
    local t0
    t0=$(now)
    dc --progress plain build bot >"$WORK/build.log" 2>&1 || {
        tail -30 "$WORK/build.log"
        fail "the build failed"
    }
    local layer="installed now"
    if grep -A1 -E "RUN python3 -m venv /opt/venv" "$WORK/build.log" | grep -q CACHED; then
        layer="cached"
    fi
    ok "built in $(elapsed "$t0" "$(now)") s (dependency layer: $layer)"
    local size
    size=$(docker image inspect -f '{{.Size}}' verdict:latest)

    say "starting with a fresh volume (docker compose up -d)"
    dc down --volumes --remove-orphans >/dev/null 2>&1 || true
    STACK_UP=1
    dc up -d bot >"$WORK/up.log" 2>&1 || {
        cat "$WORK/up.log"
        fail "docker compose up failed"
    }
    wait_healthy
    ok "ready after $READY_S s (/readyz 200), healthy after $HEALTHY_S s (health check every 10 s)"
    local ready
    ready=$(curl -fsS "http://127.0.0.1:$BOT_PORT/readyz")
    [ "$(json 'data["mode"]' <<<"$ready")" = polling ] || fail "/readyz: $ready"
    ok "/readyz: $(json '"mode %s, model %s, %d worker(s), torch %s, python %s" % (data["mode"], data["model"], data["workers_ready"], data["versions"]["torch"], data["versions"]["python"])' <<<"$ready")"
    bot_log | grep -E "first start|registered the bundled|pool:|ready in" | sed 's/^/  log: /'

    say "sending a photo through the sandbox"
    "$PY" -c "import sys; from tests.images import coffee_jpeg; open(sys.argv[1], 'wb').write(coffee_jpeg())" "$WORK/coffee.jpg"
    local sent text message callback
    sent=$(curl -fsS -F photo=@"$WORK/coffee.jpg" "http://127.0.0.1:$SANDBOX_PORT/_sandbox/send?wait=60")
    text=$(json 'data["replies"][0]["text"]' <<<"$sent")
    [[ $text =~ ^espresso\ —\ [0-9]+%$ ]] || fail "unexpected answer: $text"
    ok "answered: $text"
    message=$(json 'data["replies"][0]["message_id"]' <<<"$sent")
    callback=$(json 'data["replies"][0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]' <<<"$sent")
    ok "memory: $(docker stats --no-stream --format '{{.MemUsage}}' "$(container)")"

    say "restarting (docker compose down, then up): the volume stays"
    dc down >/dev/null 2>&1
    dc up -d bot >"$WORK/up.log" 2>&1 || fail "docker compose up failed: $(tail -1 "$WORK/up.log")"
    wait_healthy
    ok "ready after $READY_S s, healthy after $HEALTHY_S s (second start)"
    if bot_log | grep -q "first start"; then
        fail "the second start exported the default model again"
    fi
    local pressed answer
    pressed=$(curl -fsS -X POST "http://127.0.0.1:$SANDBOX_PORT/_sandbox/press" \
        -d message_id="$message" -d data="$callback" -d wait=30)
    answer=$(json 'data["answer"]["text"]' <<<"$pressed")
    [ "$answer" = "✅ Recorded as right. Thank you!" ] || fail "the button after the restart: $pressed"
    ok "✅ Right on the answer from before the restart: \"$answer\" (the prediction was kept)"
    local models
    models=$(dc exec -T bot find /data -name '*.pkl')
    [ "$(wc -l <<<"$models")" = 1 ] || fail "model files in the volume: $models"
    ok "one model file in the volume: $models"

    say "the image alone: CPU limit, a bind mount it cannot write, no token"
    local workers
    workers=$(docker run --rm --cpus 1 verdict:latest python -c "from bot.startup import available_cpus; print(available_cpus())")
    [ "$workers" = 1 ] || fail "--cpus 1 gives $workers worker(s)"
    ok "--cpus 1: 1 worker ($(docker run --rm verdict:latest python -c "from bot.startup import available_cpus; print(available_cpus())") without a limit on this $(nproc)-CPU host)"
    mkdir "$WORK/bind"
    local refused status
    set +e
    refused=$(docker run --rm -v "$WORK/bind:/data" --env-file "$WORK/check.env" verdict:latest 2>&1)
    status=$?
    set -e
    if [ "$status" != 2 ] || ! grep -q "sudo chown -R 10001:10001 ./data" <<<"$refused"; then
        fail "bind mount owned by root: status $status: $refused"
    fi
    ok "root-owned bind mount: exit 2, \"$(head -1 <<<"$refused")\""
    set +e
    refused=$(docker run --rm verdict:latest 2>&1)
    status=$?
    set -e
    if [ "$status" != 2 ] || ! grep -q "TELEGRAM_TOKEN is not set" <<<"$refused"; then
        fail "no token: status $status: $refused"
    fi
    ok "no token: exit 2, \"$(head -1 <<<"$refused")\""

    say "stopping (docker compose stop: SIGTERM)"
    local id
    id=$(container)
    t0=$(now)
    dc stop bot >/dev/null 2>&1
    local stop_s exit_code
    stop_s=$(elapsed "$t0" "$(now)")
    exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
    [ "$exit_code" = 0 ] || fail "exit status $exit_code after SIGTERM"
    ok "stopped in $stop_s s, exit status 0"
    bot_log | grep -q "stopped cleanly" || fail "no clean stop in the log"

    take_down
    echo
    echo "compose check passed: image verdict:latest $(awk -v b="$size" 'BEGIN { printf "%.2f GB", b / 1e9 }')" \
        "(base $BASE_IMAGE, torch from $TORCH_INDEX)"
}

# scripts/slim-check.sh and scripts/cluster-check.sh source this file for its functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
