#!/usr/bin/env bash
# The GPU figures of the training-speed and PiCo work on a lent GPU machine (offline, Python
# 3.12 with its own CUDA PyTorch), one step per device call: a call may run 10 minutes, and the
# machine keeps build/gpu/ between calls while it stays warm. Gather .gpu/ here first
# (scripts/gpu-carry.sh) and carry it with every call. README: "On a lent GPU machine".
#
#   bash scripts/gpu-session.sh setup       wheels, S3 server binary, protobuf modules; the local
#                                           S3 server up; both demos' data and PiCo's tracks
#   bash scripts/gpu-session.sh train       perf-train-gpu's rows of METHODS (simsiam, moco, pico)
#   bash scripts/gpu-session.sh flow        perf-flow: RAFT batched (bf16, fp32) vs bare torchvision
#   bash scripts/gpu-session.sh e2e-start   the end-to-end SimSiam run, detached, MINUTES long
#   bash scripts/gpu-session.sh e2e-wait    wait up to WAIT s for it; its results come back
#
# Settings (environment): METHODS ("simsiam"; one method a call fits its 10 minutes), PICO (the
# experiment whose data and tracks PiCo's rows use: pico_synthetic; empty: setup makes none),
# ROW_SECONDS (20), WARMUP (10), BATCH (256), NAME (train_gpu_<methods>: the rows' results file),
# CALL_SECONDS (560: train stops then, keeping its finished rows), E2E (the end-to-end run's row,
# default the fastest SimSiam row so far), MINUTES (10), WAIT (540). Results: JSON files in $OUT (the device
# tool's folder that comes back; build/gpu/out elsewhere). SMOKE=1 runs every step on a CPU with
# tiny models (checks this script; PY and SITE point at a local interpreter and wheel folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
CARRY=${CARRY:-.gpu}
STATE=${STATE:-build/gpu}
OUT=${OUT:-$STATE/out}
mkdir -p "$STATE/bin" "$STATE/perf" "$OUT"
STATE=$(cd "$STATE" && pwd)
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PATH="$STATE/bin:$PATH" VIDSSL_STORE_URI=s3://vidssl
PICO=${PICO-pico_synthetic}
SMOKE_ARGS=()
if [ "${SMOKE:-0}" = 1 ]; then
    SMOKE_ARGS=(--smoke --batch 4 --workers 0)
fi

with_store() {  # the local S3 server (started, or found running) and its environment, then "$@"
    test -x "$STATE/bin/weed" || { echo "gpu-session: no S3 server binary: run setup" >&2; exit 1; }
    "$PY" -c "import sys; from vidssl.store import seaweed; seaweed.start(sys.argv[1])" \
        "$STATE/store"
    set -a
    . "$STATE/store/env"
    set +a
    "$@"
}

setup() {
    for needed in "$CARRY/wheels" "$CARRY/weed.xz" "$CARRY/schema"; do
        test -e "$needed" || {
            echo "gpu-session: $needed missing: run 'make gpu-carry' where pip works, and" \
                "carry $CARRY with every call" >&2
            exit 1
        }
    done
    if [ ! -f "$SITE/.installed" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$CARRY"/wheels/*.whl
        touch "$SITE/.installed"
    fi
    if [ ! -x "$STATE/bin/weed" ]; then  # unpacked beside, then moved: never half a binary
        "$PY" -c "import lzma, shutil, sys
with lzma.open(sys.argv[1]) as packed, open(sys.argv[2], 'wb') as out:
    shutil.copyfileobj(packed, out)" "$CARRY/weed.xz" "$STATE/bin/weed.part"
        chmod +x "$STATE/bin/weed.part" && mv "$STATE/bin/weed.part" "$STATE/bin/weed"
    fi
    cp "$CARRY"/schema/*_pb2.py src/vidssl/objectron/schema/
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    df -h /dev/shm || true  # loader workers hand batches over through it
    with_store "$PY" scripts/gpu_prepare.py ${PICO:+--pico "$PICO"}
}

train() {
    local wanted methods=() pico=() name status=0
    read -r -a wanted <<< "${METHODS:-simsiam}"
    for method in "${wanted[@]}"; do
        if [ "$method" = pico ]; then
            test -n "$PICO" || { echo "gpu-session: METHODS=pico needs PICO=EXP" >&2; exit 1; }
            pico=(--pico "$PICO")
        else
            methods+=("$method")
        fi
    done
    name=${NAME:-train_gpu_$(IFS=_; echo "${wanted[*]}")}
    case "$name" in train_gpu*) ;; *) echo "gpu-session: NAME must start with train_gpu" >&2; exit 1 ;; esac
    # Rows are saved in build/gpu/perf as each finishes; the call's limit must not lose them.
    with_store env VIDSSL_PERF_DIR="$STATE/perf" timeout "${CALL_SECONDS:-560}" \
        "$PY" -m vidssl.perf.train_gpu --methods "${methods[@]}" "${pico[@]}" \
        --row-seconds "${ROW_SECONDS:-20}" --warmup "${WARMUP:-10}" --batch "${BATCH:-256}" \
        --out "$name" "${SMOKE_ARGS[@]}" || status=$?
    cp "$STATE/perf/$name.json" "$OUT/" 2>/dev/null || true
    if [ "$status" != 0 ]; then
        echo "gpu-session: train ended with status $status (124: CALL_SECONDS); finished rows kept" >&2
    fi
    return "$status"
}

flow() {
    with_store env VIDSSL_PERF_DIR="$OUT" "$PY" -m vidssl.perf.flow --raft-random-weights
}

fastest_simsiam_row() {
    "$PY" - "$STATE"/perf/train_gpu*.json <<'EOF'
import json, sys
rows = [r for path in sys.argv[1:] if not path.endswith("_e2e.json")
        for r in json.load(open(path))["rows"]
        if r["name"].startswith(("simsiam: trainer", "simsiam: +"))]
print(max(rows, key=lambda r: r["examples_per_second"])["name"] if rows else "")
EOF
}

e2e_start() {
    local row=${E2E:-}
    if [ -z "$row" ]; then
        row=$(fastest_simsiam_row 2>/dev/null || true)
        test -n "$row" || { echo "gpu-session: no SimSiam rows yet: run train, or set E2E" >&2; exit 1; }
    fi
    echo "end to end for ${MINUTES:-10} min: $row"
    rm -f "$STATE/perf/train_gpu_e2e.json"
    with_store true
    VIDSSL_PERF_DIR="$STATE/perf" setsid nohup "$PY" -m vidssl.perf.train_gpu --methods \
        --e2e "$row" --minutes "${MINUTES:-10}" --warmup "${WARMUP:-10}" \
        --batch "${BATCH:-256}" --out train_gpu_e2e "${SMOKE_ARGS[@]}" \
        > "$STATE/e2e.log" 2>&1 < /dev/null &
    echo $! > "$STATE/e2e.pid"
    echo "started (pid $(cat "$STATE/e2e.pid")); log: $STATE/e2e.log"
}

e2e_wait() {
    local pid deadline=$((SECONDS + ${WAIT:-540}))
    pid=$(cat "$STATE/e2e.pid")
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 10; done
    tail -n 5 "$STATE/e2e.log"
    if kill -0 "$pid" 2>/dev/null; then
        echo "still running: call e2e-wait again"
    elif [ -f "$STATE/perf/train_gpu_e2e.json" ]; then
        cp "$STATE/perf/train_gpu_e2e.json" "$STATE/e2e.log" "$OUT/"
        echo "done: $OUT/train_gpu_e2e.json"
    else
        cp "$STATE/e2e.log" "$OUT/"
        echo "gpu-session: the end-to-end run ended without results (log in \$OUT)" >&2
        exit 1
    fi
}

case "${1:-}" in
    setup) setup ;;
    train) train ;;
    flow) flow ;;
    e2e-start) e2e_start ;;
    e2e-wait) e2e_wait ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
esac
