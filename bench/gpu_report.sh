#!/bin/bash
# The GPU report: one command for one CUDA GPU that checks and measures what CPUs cannot, and
# writes it all as Markdown.
#
#   bash bench/gpu_report.sh REPORT.md [--original DIR] [--quick]
#
# Sections, each under its own time limit (the whole stays under 9 minutes on one H100-class GPU):
#   Environment     torch, CUDA, cuDNN, the GPU and its memory, the CPU, the libraries
#   CUDA tests      pytest -m cuda (tests/test_cuda.py): --amp bf16 and fp16 with GradScaler,
#                   --channels_last, --compile, torchrun with one process on NCCL with and without
#                   --cross_replica, Inception metrics in training, evaluate.py and sample.py on
#                   the device, save/resume on CUDA and what exactness holds there
#   Training speed  bench/bench_train.py, the CIFAR and the released I128 configs in fp32, bf16
#                   and compile+bf16 (channels_last): iterations/s, images/s, peak memory, MFU
#                   against the matmul peak measured in the same run, and the days one such GPU
#                   would need for the released run's 150k iterations (the original: 15 days on
#                   8 x V100)
#   Glow            bench/bench_glow.py on CUDA: sampling and training against the device's own 3x3
#                   convolution throughput, training memory against depth (K 8, 16, 32)
#   vs original     bench/bench_vs_original.py on CUDA, with --original DIR (a checkout of
#                   ajbrock/BigGAN-PyTorch)
# --quick shrinks everything to a smoke run. Without CUDA every CUDA part is marked skipped and the
# script exits 0; with --quick it then runs each bench once on the CPU at a toy size, to check the
# plumbing (what tests/test_gpu_report.py runs). Needs only a stock CUDA PyTorch image (torch >=
# 2.4, torchvision, h5py, scipy, tqdm, matplotlib, pytest) and no network. PYTHON picks the
# interpreter (default: python, else python3).
set -u

usage() {
  echo "usage: bash bench/gpu_report.sh REPORT.md [--original DIR] [--quick]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
case "$1" in -*) usage ;; esac
mkdir -p "$(dirname "$1")" || exit 2
REPORT="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift
ORIGINAL=''
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --original) [ $# -ge 2 ] || usage; ORIGINAL="$(cd "$2" 2>/dev/null && pwd)" || {
        echo "error: --original $2 is not a folder" >&2; exit 2; }; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) usage ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-$(command -v python || command -v python3)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)

# run TITLE LIMIT_SECONDS COMMAND...: the command under a time limit, its output (the last 150
# lines) in a code block, then its exit status and time.
run() {
  local title="$1" limit="$2"
  shift 2
  echo "### $title" >> "$REPORT"
  printf '\n`%s`\n\n```text\n' "$*" >> "$REPORT"
  echo "[$(($(date +%s) - START)) s] $title ..." >&2
  local began=$(date +%s) status
  timeout -k 10 "$limit" "$@" > "$WORK/out" 2>&1
  status=$?
  tail -n 150 "$WORK/out" | tr -d '\r' >> "$REPORT"
  printf '```\n\n' >> "$REPORT"
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    echo "Stopped at its time limit of $limit s (what it printed is above)." >> "$REPORT"
  else
    echo "Exit status $status, $(($(date +%s) - began)) s." >> "$REPORT"
  fi
  echo >> "$REPORT"
}

skipped() {
  printf '### %s\n\nSkipped: %s\n\n' "$1" "$2" >> "$REPORT"
}

{
  echo "# BigGAN-PyTorch GPU report"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')"\
"$([ -n "$(git status --porcelain 2>/dev/null)" ] && echo ' (with uncommitted changes)')"\
"$([ $QUICK -eq 1 ] && echo ', --quick (smoke sizes, not measurements)')"
  echo
  echo "## Environment"
  echo
} > "$REPORT"
"$PY" - "$WORK/cuda" >> "$REPORT" 2>&1 <<'EOF'
import importlib.metadata, os, platform, sys
import torch
with open(sys.argv[1], 'w') as f:  # for the sections below: 1 with a usable GPU
  f.write('1' if torch.cuda.is_available() else '0')
print('- Python %s, torch %s (CUDA build %s, cuDNN %s)' % (
    sys.version.split()[0], torch.__version__, torch.version.cuda,
    torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'none'))
versions = []
for name in ('torchvision', 'numpy', 'scipy', 'h5py', 'tqdm', 'matplotlib', 'pytest'):
  try:  # from the installed metadata: importing them all would take seconds
    versions.append('%s %s' % (name, importlib.metadata.version(name)))
  except importlib.metadata.PackageNotFoundError:
    versions.append('%s missing' % name)
print('- ' + ', '.join(versions))
if torch.cuda.is_available():
  for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    free, total = torch.cuda.mem_get_info(i)
    print('- GPU %d: %s, %.1f GiB (%.1f GiB free), compute capability %d.%d, %d SMs, bf16 %s'
          % (i, p.name, total / 2 ** 30, free / 2 ** 30, p.major, p.minor,
             p.multi_processor_count, torch.cuda.is_bf16_supported()))
else:
  print('- GPU: none visible (torch.cuda.is_available() is False)')
memory = ''
try:
  with open('/proc/meminfo') as f:
    memory = ', %.0f GiB RAM' % (int(f.readline().split()[1]) / 2 ** 20)
except OSError:
  pass
print('- CPU: %s, %d cores%s, torch CPU capability %s' % (
    platform.processor() or platform.machine(), os.cpu_count(), memory,
    torch.backends.cpu.get_cpu_capability()))
EOF
CUDA=$(cat "$WORK/cuda" 2>/dev/null || echo 0)
if command -v nvidia-smi > /dev/null 2>&1; then
  echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)" \
      >> "$REPORT"
fi
echo >> "$REPORT"

echo "## CUDA tests" >> "$REPORT"
echo >> "$REPORT"
if [ $CUDA -eq 1 ]; then
  FINDINGS="$WORK/findings.md"
  : > "$FINDINGS"
  TESTS=tests
  [ $QUICK -eq 1 ] && TESTS=tests/test_cuda.py
  export BIGGAN_CUDA_REPORT="$FINDINGS"
  run "pytest -m cuda" 170 "$PY" -m pytest "$TESTS" -m cuda -q -rA -p no:cacheprovider
  if [ -s "$FINDINGS" ]; then
    cat "$FINDINGS" >> "$REPORT"
    echo >> "$REPORT"
  fi
else
  skipped "pytest -m cuda" "no CUDA device."
fi

echo "## Training speed" >> "$REPORT"
echo >> "$REPORT"
if [ $QUICK -eq 1 ]; then
  CIFAR=(--columns fp32,bf16 --ch 8 --batch_size 4 --rounds 1 --iters 1 --warmup 1)
  I128=(--columns fp32,bf16 --i128_batch 1 --rounds 1 --iters 1 --warmup 1)
else
  CIFAR=(--columns fp32,bf16,compile_bf16_cl --rounds 3 --iters 2 --warmup 2)
  I128=(--columns fp32,bf16,compile_bf16_cl --rounds 2 --iters 2 --warmup 2)
fi
if [ $CUDA -eq 1 ]; then  # two runs, so that a slow compile of one leaves the other its time
  run "bench_train.py, CIFAR config" 80 "$PY" bench/bench_train.py --device cuda --threads 8 \
      --configs cifar "${CIFAR[@]}"
  run "bench_train.py, released I128 config" 170 "$PY" bench/bench_train.py --device cuda \
      --threads 8 --configs i128 "${I128[@]}"
else
  skipped "bench_train.py on CUDA" "no CUDA device."
  if [ $QUICK -eq 1 ]; then  # the same command on the CPU at a toy size: the plumbing, not speed
    run "bench_train.py, CPU smoke run (not a measurement)" 300 "$PY" bench/bench_train.py \
        --device cpu --threads 1 --configs cifar --columns fp32 --ch 4 --batch_size 2 \
        --rounds 1 --iters 1 --warmup 1
  fi
fi

echo "## Glow" >> "$REPORT"
echo >> "$REPORT"
if [ $CUDA -eq 1 ]; then  # sampling, training and memory against depth on the device
  if [ $QUICK -eq 1 ]; then
    GLOW=(--parts train,memory --train_depth 2 --train_batch 4 --memory_hidden 32 --repeats 1)
  else
    GLOW=(--parts sample,train,memory --sample_depth 8 --train_batch 64 --repeats 5)
  fi
  run "bench_glow.py" 60 "$PY" bench/bench_glow.py --device cuda --threads 8 "${GLOW[@]}"
else
  skipped "bench_glow.py on CUDA" "no CUDA device."
fi

echo "## Against the original" >> "$REPORT"
echo >> "$REPORT"
if [ -z "$ORIGINAL" ]; then
  skipped "bench_vs_original.py" "no --original DIR given."
elif [ $CUDA -eq 1 ]; then
  run "bench_vs_original.py on CUDA" 45 "$PY" bench/bench_vs_original.py --original "$ORIGINAL" \
      --device cuda --threads 8 --columns fp32,bf16 --rounds 2 --iters 2 --warmup 1
else
  skipped "bench_vs_original.py on CUDA" "no CUDA device."
fi

echo "Report written in $(($(date +%s) - START)) s." >> "$REPORT"
echo "[$(($(date +%s) - START)) s] wrote $REPORT" >&2
exit 0
