#!/usr/bin/env bash
# Every GPU bar of issue 13 on one H100/H200 in under 8 minutes, then the RESULTS.md rows.
#
#   bash benchmarks/gpu_all.sh [--data-dir DIR] [--wheels DIR] [--out DIR]   # on the GPU machine
#   bash benchmarks/gpu_all.sh --tiny          # every part's code path on a CPU, tiny slices (~3 min)
#   bash benchmarks/gpu_all.sh --prepare       # where pip reaches PyPI: wheels into .whl/, data into .gpu-data/
#
# Parts, in order, each under its own timeout (a part that runs out is reported and the next
# one starts; the budgets add up to 470 s with set-up):
#   1. cifar10   gpu_cifar10.py --runs 5: `--recipe fast` against airbench94, 5 runs each   (200 s)
#   2. rsb-a3    visionbench train --recipe rsb-a3 --model resnet50 --data mnist, 10 epochs   (130 s)
#   3. resnet18  gpu_resnet18.py --epochs 4: loader gain at equal precision, fp32 and bf16   (120 s)
# The GPU machine has no network: what visionbench and airbench need that is not installed
# there (pydantic, airbench 0.1.8 -- pure Python, not vendored here) comes from the wheels
# `--prepare` saved, installed into a scratch folder put on PYTHONPATH. Without airbench the
# airbench94 comparison is skipped, and said so, rather than failing the rest.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
DATA=${VISIONBENCH_DATA:-}
WHEELS=$ROOT/.whl
OUT=$ROOT/runs/gpu-all-$(date +%Y%m%d-%H%M%S)
MODE=gpu
RSB_EPOCHS=10
while [ $# -gt 0 ]; do
  case $1 in
    --data-dir) DATA=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --rsb-epochs) RSB_EPOCHS=$2; shift 2 ;;
    --tiny) MODE=tiny; shift ;;
    --prepare) MODE=prepare; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)"; exit 2 ;;
  esac
done
if [ -z "$DATA" ]; then  # a copy made by --prepare travels with the tree; else the shared folder
  if [ -d "$ROOT/.gpu-data" ]; then DATA=$ROOT/.gpu-data; else DATA=$ROOT/../shared/data; fi
fi

# Versions: the ones this project's CI resolves; pydantic pins its pydantic-core exactly.
PIP_WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
            typing-extensions==4.16.0)
if [ "$MODE" = prepare ]; then
  # For the GPU machine's Python (3.12, x86-64; PREPARE_PY to change); airbench is a
  # pure-Python sdist, built into a py3-none-any wheel here.
  mkdir -p "$WHEELS"
  $PY -m pip download --no-deps --only-binary=:all: --python-version "${PREPARE_PY:-3.12}" \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${PIP_WHEELS[@]}" || exit 1
  $PY -m pip wheel --no-deps -w "$WHEELS" airbench==0.1.8 || exit 1
  rm -rf "$ROOT/.gpu-data" && mkdir -p "$ROOT/.gpu-data/MNIST"
  cp -r "$DATA/MNIST/raw" "$ROOT/.gpu-data/MNIST/" && cp "$DATA/cifar10-jpg.tar.gz" "$ROOT/.gpu-data/" || exit 1
  du -sh "$WHEELS" "$ROOT/.gpu-data"
  echo "ready: carry .whl and .gpu-data with the tree, then run: bash benchmarks/gpu_all.sh --out DIR"
  exit 0
fi

mkdir -p "$OUT"
RESULTS=$OUT/results.md  # $OUT gets only this and one log per part; the rest goes to scratch
SCRATCH=$(mktemp -d)
SITE=$SCRATCH/site  # wheels installed here, not into the machine's environment
RUNS=$SCRATCH/runs
export PYTHONPATH=$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
t_start=$(date +%s)

importable() { $PY -c "import $1" 2>/dev/null; }
install_wheels() {  # install_wheels NAME... : the named wheels from $WHEELS, offline, into $SITE
  local files=()
  for name in "$@"; do files+=("$WHEELS"/"$name"-*.whl); done
  [ -e "${files[0]}" ] && $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${files[@]}"
}
if ! importable pydantic; then
  install_wheels pydantic pydantic_core annotated_types typing_inspection typing_extensions
fi
if ! importable visionbench.cli; then
  echo "visionbench cannot be imported: $($PY -c 'import visionbench.cli' 2>&1 | tail -1)"
  echo "on a machine with internet: bash benchmarks/gpu_all.sh --prepare, and bring .whl/ along"
  exit 1
fi
AIRBENCH=()
if ! importable airbench; then
  install_wheels airbench || timeout 60 $PY -m pip install -q --timeout 5 --retries 0 --target "$SITE" airbench==0.1.8 \
    >/dev/null 2>&1
fi
if ! importable airbench; then
  echo "airbench 0.1.8 is not installed and could not be installed (no wheel in $WHEELS, no network):"
  echo "  the airbench94 comparison is SKIPPED. Fix: bash benchmarks/gpu_all.sh --prepare where pip reaches PyPI"
  AIRBENCH=(--no-airbench)
fi
echo "setup: $(( $(date +%s) - t_start )) s; data $DATA; results in $OUT"
$PY -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"

status=0
part() {  # part NAME SECONDS CMD... : run one part under its timeout, its log beside the results
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "=== $name (at most $limit s): $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  if [ $rc -ne 0 ]; then
    status=1
    [ $rc -eq 124 ] && printf '### %s\n\nTIMED OUT after %s s (log: %s.log)\n\n' "$name" "$limit" "$name" >>"$RESULTS"
    [ $rc -ne 124 ] && printf '### %s\n\nFAILED, exit %s (log: %s.log)\n\n' "$name" "$rc" "$name" >>"$RESULTS"
  fi
}

if [ "$MODE" = tiny ]; then
  DEV=(--device cpu --tiny)
  RSB=(--epochs 1 --device cpu data.per_class=4 data.test_per_class=2 train.batch_size=8 train.threads=1)
  T_CIFAR=300 T_RSB=300 T_RN=300
else
  DEV=()
  RSB=(--epochs "$RSB_EPOCHS")
  T_CIFAR=200 T_RSB=130 T_RN=120
fi

part cifar10 $T_CIFAR $PY "$ROOT/benchmarks/gpu_cifar10.py" --runs 5 --data-dir "$DATA" ${DEV[@]+"${DEV[@]}"} ${AIRBENCH[@]+"${AIRBENCH[@]}"} \
  --results "$RESULTS"

# rsb-a3's recipe note for MNIST-sized data: no flips, batch 256 with the lr scaled to it.
part rsb-a3 $T_RSB $PY -m visionbench train --recipe rsb-a3 --model resnet50 --data mnist --data-dir "$DATA" \
  --runs-dir "$RUNS" --name rsb-a3-mnist --json aug.flip=false train.batch_size=256 optim.lr=1e-3 "${RSB[@]}"
if [ -f "$RUNS/rsb-a3-mnist/metrics.jsonl" ]; then  # also after a timeout: the epochs it finished
  $PY - "$RUNS/rsb-a3-mnist" "$MODE" >>"$RESULTS" <<'EOF'
import json, sys
from pathlib import Path

run, mode = Path(sys.argv[1]), sys.argv[2]
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
done = (run / "summary.json").is_file()
s = json.loads((run / "summary.json").read_text()) if done else {}
per_epoch = sorted(r["seconds"] for r in rows)[len(rows) // 2]
acc = f"{s['test_acc']:.2%}" if done else f"stopped; val {rows[-1].get('val_acc', 0):.2%}"
met = done and s["test_acc"] >= 0.995 and len(rows) <= 10
tiny = " -- TINY code-path check, not a measurement" if mode == "tiny" else ""
print(f"### rsb-a3, ResNet-50, MNIST{tiny}\n")
print("| run | epochs | test acc | median s/epoch | train s | bar: >= 99.5% in <= 10 epochs |")
print("| --- | --- | --- | --- | --- | --- |")
print(
    f"| `--recipe rsb-a3 --model resnet50 --data mnist` | {len(rows)} | {acc} | {per_epoch:.1f} "
    f"| {sum(r['seconds'] for r in rows):.1f} | {'MET' if met else 'NOT MET'} |\n"
)
EOF
fi

part resnet18 $T_RN $PY "$ROOT/benchmarks/gpu_resnet18.py" --epochs 4 --data-dir "$DATA" ${DEV[@]+"${DEV[@]}"} \
  --results "$RESULTS"

echo
echo "================ RESULTS.md rows ($(( $(date +%s) - t_start )) s in all) ================"
cat "$RESULTS"
rm -rf "$SCRATCH"
exit $status
