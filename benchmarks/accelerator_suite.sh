#!/usr/bin/env bash
# One-command accelerator suite (issue 25): about 5 minutes on one GPU, one JSON line per measurement.
#
#   bash benchmarks/accelerator_suite.sh [--out results.jsonl] [--python PY]      # on a GPU/TPU machine
#   bash benchmarks/accelerator_suite.sh --dry-run                                # print the commands only
#   bash benchmarks/accelerator_suite.sh --tiny                                   # CPU-sized smoke run
#
# Measurements (each a benchmarks/ script of its own; see benchmarks/README.md for what each reports):
#   clip_b16_bf16   ViT-B/16 CLIP train step, bfloat16 compute: samples/s and MFU against the same run's bf16
#                   matmul peak (goal >= 0.5 on H100/H200)
#   clip_b32_bf16   ViT-B/32 samples/s
#   loss_memory     ring vs all-gather (chunked) CLIP loss + gradients at growing global batches: ms and device
#                   peak memory; the summary line gives the largest batch each one ran
#   flip            FLIP patch dropout 0.5 vs the unmasked ViT-B/16 step, alternated in one process: the speed-up
#   input_pipeline  the webdataset input pipeline's images/s vs the bare JPEG decode rate of the same shards
# Sizes can be overridden from the environment: B16 (256), B32 (512), STEPS (20), LOSS_BATCHES, LOSS_CHUNK.
# A measurement that fails prints {"suite": NAME, "error": ...} and the suite goes on; the exit status is the
# number of failed measurements (0 = all ran).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0; TINY=0; OUT=""; PY="${PYTHON:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --tiny) TINY=1 ;;
    --out) OUT="$2"; shift ;;
    --python) PY="$2"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "accelerator_suite.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

if [[ $TINY == 1 ]]; then   # seconds on a CPU: the anchor model and small batches, same scripts and flags
  B16="${B16:-8}"; B32="${B32:-8}"; STEPS="${STEPS:-2}"; PRESET16=anchor; PRESET32=anchor; DTYPE=float32
  LOSS_BATCHES="${LOSS_BATCHES:-256,512}"; LOSS_CHUNK="${LOSS_CHUNK:-64}"; LOSS_BACKEND=cpu
  PIPE="--gen_shards 2 --gen_per_shard 32 --gen_size 64 --image_size 32 --decode_images 32 --steps 2 --batch 8"
else
  B16="${B16:-256}"; B32="${B32:-512}"; STEPS="${STEPS:-20}"; PRESET16=vit_b16; PRESET32=vit_b32; DTYPE=bfloat16
  LOSS_BATCHES="${LOSS_BATCHES:-16384,65536,131072,262144}"; LOSS_CHUNK="${LOSS_CHUNK:-4096}"; LOSS_BACKEND=native
  PIPE="--num_workers 8 --steps 20 --batch 256"
fi

NAMES=(clip_b16_bf16 clip_b32_bf16 loss_memory flip input_pipeline)
CMDS=(
  "$PY benchmarks/clip_step.py --preset $PRESET16 --dtype $DTYPE --batch $B16 --steps $STEPS --warmup 2"
  "$PY benchmarks/clip_step.py --preset $PRESET32 --dtype $DTYPE --batch $B32 --steps $STEPS --warmup 2"
  "$PY benchmarks/contrastive_memory.py --backend $LOSS_BACKEND --methods clip_chunked,clip_ring --batches $LOSS_BATCHES --chunk_size $LOSS_CHUNK --repeats 2"
  "$PY benchmarks/clip_step.py --preset $PRESET16 --dtype $DTYPE --batch $B16 --steps $STEPS --warmup 2 --patch_dropout 0.5 --rounds 2"
  "$PY benchmarks/input_pipeline.py --source webdataset $PIPE"
)

failed=0
for i in "${!NAMES[@]}"; do
  name="${NAMES[$i]}"; cmd="${CMDS[$i]}"
  if [[ $DRY == 1 ]]; then
    echo "$name: $cmd"
    continue
  fi
  log="$(mktemp)"
  if $cmd > "$log" 2>&1; then
    # every JSON line the script printed, tagged with the measurement's name
    lines="$(grep '^{' "$log" | sed "s/^{/{\"suite\": \"$name\", /")"
    if [[ -z "$lines" ]]; then
      lines="{\"suite\": \"$name\", \"error\": \"printed no JSON line\"}"
      failed=$((failed + 1))
    fi
  else
    rc=$?
    lines="{\"suite\": \"$name\", \"error\": \"exit $rc: $(tail -n 1 "$log" | tr -d '"\\' | cut -c1-200)\"}"
    failed=$((failed + 1))
  fi
  rm -f "$log"
  echo "$lines"
  [[ -n "$OUT" ]] && echo "$lines" >> "$OUT"
done
exit $failed
