#!/usr/bin/env bash
# ldm_course's one entry point.
#   ./course.sh run     set up, then execute every chapter headless, in order -> _course/ (notebooks + HTML)
#   ./course.sh test    set up, then run the tests (every notebook through nbdev's runner, plus repo checks)
#   ./course.sh setup   only set up: .venv/ with the pinned packages, the package itself, the data
#   ./course.sh readme  regenerate README.md from nbs/index.ipynb
#   ./course.sh gpu     set up, then the GPU runbook (<= 9 min, one H100/H200) -> gpu_results/; LDM_GPU_DRY_RUN=1: on CPU
# Environment: PYTHON (interpreter for the venv, default python3), LDM_QUICK=1/0 (force quick/full size),
# LDM_TEST_FLAGS="slow gpu" (also run cells flagged so under tests).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}

log() { printf '\033[1m[course] %s\033[0m\n' "$*" >&2; }
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v -e 'is ignored: it is neither a file nor a directory' -e '^\s*$' || true; }; return "${PIPESTATUS[0]}"; }

setup() {
  local t0=$SECONDS
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1   # the browser test drives the system Chromium: Playwright never downloads one
  command -v "$PY" >/dev/null || { echo "error: $PY not found; install Python 3.10+ or set PYTHON=/path/to/python3" >&2; exit 1; }
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: Python 3.10+ is required, $PY is $("$PY" --version 2>&1)" >&2; exit 1; }
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating the virtual environment in .venv/"
    "$PY" -m venv "$VENV"
  fi
  local stamp; stamp=$(cat constraints.txt settings.ini setup.py | sha256sum | cut -c1-16)
  if [ "$(cat "$VENV/.ldm-setup-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "installing the pinned packages (constraints.txt) and ldm_course itself; the first time takes a few minutes"
    quiet_pip install -q --upgrade pip setuptools wheel
    quiet_pip install -q -c constraints.txt -e '.[dev]'
    # k-diffusion is a test oracle for the samplers (chapter 09 loads only its `sampling` module); its declared
    # dependencies are its training stack (CLIP, clean-fid, kornia, ...), so it is installed without them.
    quiet_pip install -q --no-deps -c constraints.txt k-diffusion
    echo "$stamp" > "$VENV/.ldm-setup-stamp"
  fi
  get_data
  log "setup done in $((SECONDS - t0)) s: $("$VENV/bin/python" -c 'from ldm_course.core import run_info; print(run_info())')"
}

get_data() {
  # Offline data from Debian packages where apt is available: Fashion-MNIST (dataset-fashion-mnist) and the colour
  # emoji font (fonts-noto-color-emoji), the emoji groups and subgroups (unicode-data's emoji-test.txt), and Chromium for
  # the app's browser test (chromium; without it that test is skipped).
  # Without apt, Fashion-MNIST falls back to torchvision's download (internet).
  local fm=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz font=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
  local etest=/usr/share/unicode/emoji/emoji-test.txt
  local want=""
  [ -f $fm ] || [ -d "$HOME/.cache/ldm_course/fashion-mnist/FashionMNIST/raw" ] || want="$want dataset-fashion-mnist"
  [ -f $font ] || [ -n "${LDM_EMOJI_FONT:-}" ] || want="$want fonts-noto-color-emoji"
  [ -f $etest ] || [ -n "${LDM_EMOJI_TEST:-}" ] || want="$want unicode-data"
  command -v chromium >/dev/null || want="$want chromium"
  if [ -n "$want" ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && sudo="sudo -n"; } || true
    if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; }; then
      log "installing Debian packages:$want"
      $sudo apt-get install -y -q $want >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q $want >/dev/null; } || true
    fi
  fi
  if [ ! -f $fm ]; then
    log "Fashion-MNIST: trying torchvision's download into ~/.cache/ldm_course"
    "$VENV/bin/python" -c 'from ldm_course.data import fashion_mnist_dir; print(fashion_mnist_dir())'
  fi
  [ -f $etest ] || [ -n "${LDM_EMOJI_TEST:-}" ] || log "WARNING: no emoji-test.txt: install unicode-data or set LDM_EMOJI_TEST (the emoji text-to-image chapter needs it)"
  [ -f $font ] || [ -n "${LDM_EMOJI_FONT:-}" ] || log "WARNING: no colour emoji font: install fonts-noto-color-emoji or set LDM_EMOJI_FONT (the emoji chapter needs it)"
}

chapters() { ls nbs/[0-9][0-9]_*.ipynb; }

run() {
  setup
  local out=$ROOT/_course t_all=$SECONDS
  mkdir -p "$out/notebooks" "$out/html"
  export LDM_RUNS=${LDM_RUNS:-$ROOT/_runs}
  # the measured figures the front page quotes: written by the chapters' `record` calls, rendered by index (run last)
  export LDM_RESULTS=$ROOT/nbs/results.json
  rm -f "$LDM_RESULTS"
  log "executing the chapters ($("$VENV/bin/python" -c 'from ldm_course.core import is_quick; print("quick size" if is_quick() else "full size")')); outputs in _course/, checkpoints in $LDM_RUNS"
  for nb in $(chapters) nbs/index.ipynb; do
    [ "$nb" = nbs/index.ipynb ] && "$VENV/bin/python" -c "from ldm_course.core import record; record('run.chapters_minutes', round(($SECONDS - $t_all) / 60, 1))"
    local name t0=$SECONDS; name=$(basename "$nb" .ipynb)
    "$VENV/bin/jupyter" nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1 \
      --output-dir "$out/notebooks" "$nb" 2>&1 | { grep -v -e 'NbConvertApp' -e 'Kernel is running over TCP' || true; }
    "$VENV/bin/jupyter" nbconvert --to html --output-dir "$out/html" "$out/notebooks/$name.ipynb" >/dev/null 2>&1
    printf '%-28s %6d s\n' "$name" $((SECONDS - t0)) | tee -a "$out/times.txt"
  done
  log "all chapters executed in $((SECONDS - t_all)) s; open _course/html/index.html"
}

test_() {
  setup
  log "running the tests"
  # notebooks run in parallel pytest-xdist workers (one test file per worker: chapters that share checkpoints are in the same file);
  # the cores are split between the workers so their threads don't fight
  local cores workers; cores=$(nproc); workers=${LDM_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}
  # lint what the course ships: pyflakes (unused imports, undefined names, redefinitions) and shadowed builtins
  log "ruff: the package, the notebooks and the tests"
  "$VENV/bin/ruff" check --quiet --select F,E9,A ldm_course nbs tests
  log "$workers test workers, OMP_NUM_THREADS=$OMP_NUM_THREADS"
  "$VENV/bin/python" -m pytest tests -n "$workers" --dist loadfile "$@"
}

has_cuda() { "$VENV/bin/python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }

gpu() {
  # The GPU runbook (ldm_course.bench.gpu_runbook): benchmark against diffusers, then the time-boxed full-size
  # Fashion-MNIST chain and its FID ratio, all within LDM_GPU_BUDGET seconds (default 540) counted from this command's
  # start; the JSON is rewritten after every stage. LDM_GPU_DRY_RUN=1: the same stages at tiny sizes on the CPU.
  local until=$(( $(date +%s) + ${LDM_GPU_BUDGET:-540} )) dry=${LDM_GPU_DRY_RUN:-0}
  local refuse="error: ./course.sh gpu needs a CUDA GPU and torch found none (nvidia-smi shows what the driver sees); LDM_GPU_DRY_RUN=1 ./course.sh gpu runs a tiny CPU dry run instead"
  local had_venv=0; [ -x "$VENV/bin/python" ] && had_venv=1
  if [ "$dry" != 1 ] && [ $had_venv = 1 ] && ! has_cuda; then echo "$refuse" >&2; exit 1; fi   # before a long setup
  setup
  if [ "$dry" != 1 ] && [ $had_venv = 0 ] && ! has_cuda; then echo "$refuse" >&2; exit 1; fi
  local args=(--until "$until")      # the setup and the interpreter's start count against the budget too
  [ "$dry" = 1 ] && args+=(--dry-run)
  [ -n "${LDM_GPU_OUT:-}" ] && args+=(--out "$LDM_GPU_OUT")
  log "GPU runbook: $(( until - $(date +%s) )) s of the budget left$([ "$dry" = 1 ] && echo ' (CPU dry run, tiny sizes)')"
  "$VENV/bin/python" -c 'import sys; from ldm_course.bench import runbook_main; runbook_main(sys.argv[1:])' "${args[@]}"
  [ "$dry" = 1 ] || log "commit the JSON in gpu_results/: git add gpu_results && git commit -m 'GPU runbook results'"
}

readme() {
  [ -x "$VENV/bin/jupyter" ] || setup
  "$VENV/bin/python" tests/readme.py --write
}

case "${1:-}" in
  run) shift; run "$@" ;;
  test) shift; test_ "$@" ;;
  setup) setup ;;
  readme) readme ;;
  gpu) gpu ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
