#!/usr/bin/env bash
# Bootstrap the skyloc workspace: .venv with pinned wheels, CMake path fix, colcon build.
# Idempotent and quick when already done: the venv is rebuilt only when requirements.txt changes.
set -eo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMP=$VENV/.skyloc-requirements.sha256
want=$(sha256sum requirements.txt scripts/bootstrap.sh | sha256sum | cut -d" " -f1)

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] creating $VENV from requirements.txt (first run: about a minute)"
  python3 -m venv "$VENV"
  # (pip's notes about this machine's local index folders are noise: filtered out)
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  # The generator wheels' CMake files name the wheel build machine's interpreter: re-point them.
  PYINC=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  NPINC=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  grep -rl /opt/python/cp311-cp311 "$VENV/share" --include='*.cmake' 2>/dev/null | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
    || true  # nothing left to rewrite in a venv fixed before
  # `skyloc` on PATH inside the venv: runs the graph runner in the built workspace.
  cat > "$VENV/bin/skyloc" <<WRAP
#!/usr/bin/env bash
# skyloc graph runner (installed by scripts/bootstrap.sh)
if [ -z "\$SKYLOC_ENV" ]; then
  set +u; . "$VENV/bin/activate"; . "$ROOT/install/setup.bash"; export SKYLOC_ENV=1
fi
exec python -m skyloc_sim.runner "\$@"
WRAP
  chmod +x "$VENV/bin/skyloc"
  echo "$want" > "$STAMP"
fi

# --training: also the training extras (torch, timm, onnx: about 5.6 GB, ~70 s from this
# machine's wheel cache), which make test needs for the ViT and training/ tests.
if [ "${1:-}" = "--training" ]; then
  TSTAMP=$VENV/.skyloc-training.sha256
  twant=$(sha256sum requirements-training.txt training/pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$TSTAMP" 2>/dev/null)" != "$twant" ]; then
    # torch's CUDA wheels need ~5.6 GB in the venv (+ unpacking): on a disk with less free
    # space the install would fail half-way, so it is skipped with a warning and the tests that
    # need torch are skipped (SKYLOC_TRAINING_MIN_FREE_GB sets the threshold).
    free_gb=$(df -Pk "$VENV" | awk 'NR==2 {print int($4 / 1048576)}')
    if [ "$free_gb" -lt "${SKYLOC_TRAINING_MIN_FREE_GB:-9}" ]; then
      echo "[bootstrap] WARNING: only ${free_gb} GB free on $(df -P "$VENV" | awk 'NR==2 {print $6}'):" \
        "not installing the training extras (torch needs ~6 GB);" \
        "the torch/timm/onnx tests will be skipped" >&2
    else
      echo "[bootstrap] installing training extras (torch, timm, onnx) from requirements-training.txt"
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        -r requirements-training.txt 2> >(grep -v 'is ignored: it is neither a file' >&2)
      echo "$twant" > "$TSTAMP"
    fi
  fi
  # skyloc_training (training/, not a ROS package): editable, its commands on PATH; it needs
  # no torch to import (data, merge, pairs, augment run without the extras)
  if ! "$VENV/bin/python" -c 'import skyloc_training' 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      --no-build-isolation -e training
  fi
fi

set +u
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export AMENT_PREFIX_PATH=$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export CMAKE_PREFIX_PATH=$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
echo "[bootstrap] colcon build --symlink-install"
colcon --log-base log build --symlink-install --event-handlers console_cohesion- summary+ \
  --cmake-args -DBUILD_TESTING=OFF 2>&1 | grep -v -E '^\s*$' | tail -n 15
echo "[bootstrap] ready: source .venv/bin/activate && source install/setup.bash"
