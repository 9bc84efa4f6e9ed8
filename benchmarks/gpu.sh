#!/usr/bin/env bash
# GPU run-book: one script for a lent single H100 / H200 (about 8 minutes), or --dry on a CPU (CI).
#
#   bash benchmarks/gpu.sh [--dry] [--out=DIR] [--refs=DIR] [--methods=seam,uda,vos] [--budget=SECONDS]
#
# For each method (SEAM, uda = ADVENT's AdvEnt step, vos = MAST) it times jaxseg's train step in fp32 and
# in bf16 (benchmarks/train_step.py: img/s, ms/step, MFU, the allocator's peak and XLA's compiled bytes),
# each in its own process so each peak is its own; with the official checkouts under --refs (SEAM/,
# ADVENT/, MAST/) the fp32 run also times the official PyTorch step at the same shapes on the same GPU;
# then MAST propagation frames/s at DAVIS 480p (benchmarks/vos.py). Meanwhile the planner predicts each of
# them on the CPU (benchmarks/gpu_table.py predict: the same step compiled by XLA:CPU, time at 40% MFU on
# the detected chip). Last, DIR/results.md and DIR/results.json: every measured row beside its prediction;
# DIR/status.txt lists each step's exit status and seconds (124 = over its time limit).
#
# --dry: tiny shapes and widths on the CPU, one step, XLA's convolutions as on a GPU, the predictions first
# and one XLA cache for all: checks that every command still runs (CI: ~40 s for vos).
# On the device machine (no package registry): carry the pure-Python wheels that its image lacks in .whl/
# (benchmarks/gpu_wheels.sh downloads them here); they are installed into /tmp/site first. The image's own
# JAX (0.11.x, cuda13 plugin), flax, optax, orbax and torch are used as they are.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
OUT=${OUT:-}
REFS=${REFS:-}
METHODS=seam,uda,vos
BUDGET=
for arg in "$@"; do
  case $arg in
    --dry) DRY=1 ;;
    --out=*) OUT=${arg#*=} ;;
    --refs=*) REFS=${arg#*=} ;;
    --methods=*) METHODS=${arg#*=} ;;
    --budget=*) BUDGET=${arg#*=} ;;
    *) echo "error: unknown argument $arg"; echo "  hint: bash benchmarks/gpu.sh [--dry] [--out=DIR] [--refs=DIR] [--methods=seam,uda,vos] [--budget=SECONDS]"; exit 2 ;;
  esac
done
OUT=${OUT:-$ROOT/gpu_results}
mkdir -p "$OUT"
: >"$OUT/status.txt"
PY=${PYTHON:-python3}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3

if [ "$DRY" = 1 ]; then
  export JAX_PLATFORMS=cpu
  CHIP=h100  # predictions for an H100; the measured rows are this CPU's
  # XLA's convolutions, as `auto` takes on a GPU (on a CPU it takes the matmul lowering for big kernels).
  TIMING="--steps=1 --repeats=1 --warmup=1 --devices=1 --conv-lowering=xla"
  declare -A SHAPES=([seam]="--size=48 --batch=1 --width=0.0625" [uda]="--size=80 --width=0.0625"
    [vos]="--size=32 --batch=1 --width=0.0625")
  PROP="--sizes=32x48 --frames=3 --width=0.0625"
  LIMIT=900  # a loaded 2-core CI machine; a step takes seconds when the cores are free
  BUDGET=${BUDGET:-3600}
  # One persistent XLA cache for every process of the run (a caller's, e.g. the test session's, if set):
  # the planner compiles the same CPU step and init that train_step.py then times, so with the
  # predictions first the dry run compiles each program once (112 -> ~55 CPU-s for vos here).
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/xla_cache}
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
else
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "error: the carried wheels in .whl/ did not install"; exit 1; }
    export PYTHONPATH=$PYTHONPATH:/tmp/site  # names the image lacks only: nothing of its own is shadowed
  fi
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  case $name in *H200*) CHIP=h200 ;; *) CHIP=h100 ;; esac
  TIMING="--steps=5 --repeats=2 --warmup=2 --devices=1"
  declare -A SHAPES=([seam]="" [uda]="" [vos]="")  # the papers' shapes (train_step.py's defaults)
  PROP="--sizes=480x854 --frames=24"
  LIMIT=150
  BUDGET=${BUDGET:-480}  # 8 minutes of the device's time
fi
declare -A REF_DIR=([seam]=SEAM [uda]=ADVENT [vos]=MAST)
START=$SECONDS
echo "# gpu.sh: chip $CHIP, dry=$DRY, methods $METHODS, out $OUT" | tee -a "$OUT/status.txt"

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log its status and seconds
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -le 10 ]; then
    echo "$name: skipped (budget of ${BUDGET} s spent)" | tee -a "$OUT/status.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "$name: exit $rc, $((SECONDS - t0)) s" | tee -a "$OUT/status.txt"
  [ "$rc" = 0 ] || tail -5 "$OUT/$name.log"
}

# The planner's predictions, on the CPU, beside the GPU work: one process per method, in parallel (they
# only compile, each within the whole budget; not niced: on a loaded CPU a niced compile starves).
PREDICTIONS=()
for m in ${METHODS//,/ }; do
  JAX_PLATFORMS=cpu step "predict_train_$m" "$BUDGET" $PY benchmarks/gpu_table.py predict \
    --chip=$CHIP --json="$OUT/predict_train_$m.json" --method=$m --precision=float32,bfloat16 \
    ${SHAPES[$m]} &
  PREDICTIONS+=($!)
done
case ,$METHODS, in *,vos,*)
  JAX_PLATFORMS=cpu step predict_propagation "$BUDGET" $PY benchmarks/gpu_table.py \
    predict-propagation --chip=$CHIP --json="$OUT/predict_propagation.json" $PROP &
  PREDICTIONS+=($!) ;;
esac

# On a GPU each precision in its own process (its own allocator peak); dry: both in one, after the
# predictions (whose compiled programs it then reads from the cache).
PRECISIONS="float32 bfloat16"
if [ "$DRY" = 1 ]; then
  PRECISIONS="float32,bfloat16"
  wait "${PREDICTIONS[@]}"
  PREDICTIONS=()
fi
for m in ${METHODS//,/ }; do
  for p in $PRECISIONS; do
    ref=()
    if [[ $p == float32* ]] && [ -n "$REFS" ] && [ -d "$REFS/${REF_DIR[$m]}" ]; then
      ref=(--reference="$REFS/${REF_DIR[$m]}")
    fi
    step "train_${m}_${p/,/_}" "$LIMIT" $PY benchmarks/train_step.py --method=$m --precision=$p $TIMING \
      ${SHAPES[$m]} "${ref[@]}" --json="$OUT/train_${m}_${p/,/_}.json"
  done
done
case ,$METHODS, in *,vos,*)
  step vos_propagation "$LIMIT" $PY benchmarks/vos.py $PROP --json="$OUT/vos_propagation.json" ;;
esac
[ ${#PREDICTIONS[@]} -gt 0 ] && wait "${PREDICTIONS[@]}"
$PY benchmarks/gpu_table.py table --dir="$OUT" --title="# GPU run-book results (chip $CHIP, dry=$DRY)" \
  >/dev/null || { echo "error: the results table was not written"; exit 1; }
echo "results: $OUT/results.md ($((SECONDS - START)) s)"
cat "$OUT/results.md"
