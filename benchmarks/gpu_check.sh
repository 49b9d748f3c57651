#!/usr/bin/env bash
# GPU check for `--engine vllm` (issue 15), one script, under ten minutes on a lent GPU machine:
# installs the vllm extra, converts the bundled model, starts `insieme serve --engine vllm`
# and `vllm serve` on the same folder with the same settings, and runs `insieme bench`
# against both at concurrency 1, 16 and 64 (with --tensor-parallel-size N on N > 1 GPUs, a
# second pass at TP=N). Results: benchmarks/out/gpu/*.json and the tables it prints (record
# them in BENCHMARKS.md with the date and the GPU). Not yet run: no GPU machine was lent.
#
#     benchmarks/gpu_check.sh            # VENV=... to reuse an environment
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/out/gpu
VENV=${VENV:-$OUT/venv}
mkdir -p "$OUT"
started=$SECONDS
log() { echo "[gpu_check +$((SECONDS - started))s] $*"; }

if [ ! -x "$VENV/bin/insieme" ]; then
    log "installing insieme[vllm] into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e '.[vllm]'
fi
PY="$VENV/bin/python"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
GPUS=$(nvidia-smi -L | wc -l)

MODEL="$OUT/smollm2-hf"
if [ ! -d "$MODEL" ]; then
    log "converting the bundled model"
    GGUF=$("$PY" -c 'from insieme.config import bundled_model_path; print(bundled_model_path())')
    "$VENV/bin/insieme" convert "$GGUF" "$MODEL" --dtype bfloat16
fi

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT

wait_healthy() {  # URL PID
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || { echo "server $2 exited; see $OUT/*.log"; exit 1; }
        curl -sf "$1/health" >/dev/null && return 0
        sleep 1
    done
    echo "server at $1 did not become healthy"; exit 1
}

run_pair() {  # TP
    local tp=$1
    local flags=(--max-num-seqs 64 --max-model-len 2048 --tensor-parallel-size "$tp"
                 --gpu-memory-utilization 0.4)
    log "TP=$tp: starting insieme serve --engine vllm and vllm serve"
    "$VENV/bin/insieme" serve --engine vllm --model "$MODEL" --port 8101 \
        --served-model-name smollm2 --no-usage-db --log-level warning "${flags[@]}" \
        > "$OUT/insieme-tp$tp.log" 2>&1 &
    local insieme_pid=$!
    PIDS+=("$insieme_pid")
    wait_healthy http://127.0.0.1:8101 "$insieme_pid"
    "$VENV/bin/vllm" serve "$MODEL" --host 127.0.0.1 --port 8102 \
        --served-model-name smollm2 "${flags[@]}" > "$OUT/vllm-tp$tp.log" 2>&1 &
    local vllm_pid=$!
    PIDS+=("$vllm_pid")
    wait_healthy http://127.0.0.1:8102 "$vllm_pid"
    for round in 1 2; do  # alternating rounds
        for server in insieme:8101 vllm-serve:8102; do
            log "TP=$tp round $round: ${server%%:*}"
            "$VENV/bin/insieme" bench --base-url "http://127.0.0.1:${server##*:}/v1" \
                --model smollm2 --label "${server%%:*}" --concurrency 1,16,64 \
                --requests 128 --max-tokens 128 --ignore-eos --temperature 0 \
                --output "$OUT/${server%%:*}-tp$tp-r$round.json"
        done
    done
    "$VENV/bin/insieme" bench --base-url http://127.0.0.1:8101/v1 --model smollm2 \
        --label insieme --concurrency 1,16,64 --requests 128 --max-tokens 128 --ignore-eos \
        --temperature 0 --output "$OUT/insieme-tp$tp-r3.json" \
        --compare "$OUT/vllm-serve-tp$tp-r2.json"
    kill "$insieme_pid" "$vllm_pid"
    wait "$insieme_pid" "$vllm_pid" 2>/dev/null || true
    PIDS=()
}

run_pair 1
if [ "$GPUS" -gt 1 ]; then
    run_pair "$GPUS"
fi
log "done: results in $OUT"
