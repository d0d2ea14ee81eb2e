#!/usr/bin/env bash
# make test: colcon tests of every package (sequential), training/ tests, flake8, launch-file
# check. Prints one summary line "N passed, N failed, N skipped" and exits non-zero on failure.
set -o pipefail
cd "$(dirname "$0")/.."
set +u
source .venv/bin/activate && source install/setup.bash
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$PWD/config/fastdds.xml}
unset FASTDDS_BUILTIN_TRANSPORTS
export PYTHONDONTWRITEBYTECODE=1
passed=0; failed=0; skipped=0; failures=()

stage() { echo; echo "=== $* ==="; }

stage "flake8 (max line 99)"
if flake8 --max-line-length 99 src launch training bench scripts; then
  passed=$((passed + 1)); echo "flake8: clean"
else
  failed=$((failed + 1)); failures+=("flake8")
fi

stage "launch files (static check)"
if skyloc check-launch; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("check-launch"); fi

stage "colcon test (every package, sequential)"
rm -rf build/*/test_results
colcon --log-base log test --executor sequential --return-code-on-test-failure \
  --event-handlers console_direct- console_cohesion+ summary+ \
  --pytest-args -q -p no:cacheprovider 2>&1 | tail -n 400 | grep -v -E '^\s*$'
colcon_rc=${PIPESTATUS[0]}
result=$(colcon test-result --test-result-base build --all 2>/dev/null | tail -n 1)
echo "$result"
# "Summary: 45 tests, 0 errors, 1 failure, 2 skipped"
read -r tests errs fails skips < <(echo "$result" | sed -E \
  's/Summary: ([0-9]+) tests?, ([0-9]+) errors?, ([0-9]+) failures?, ([0-9]+) skipped/\1 \2 \3 \4/')
if ! [[ "$tests" =~ ^[0-9]+$ ]] || [ "$tests" -eq 0 ]; then
  echo "colcon test ran no tests: treating as a failure"; colcon_rc=1; tests=0; errs=0; fails=0; skips=0
fi
if [[ "$tests" =~ ^[0-9]+$ ]]; then
  passed=$((passed + tests - errs - fails - skips)); failed=$((failed + errs + fails))
  skipped=$((skipped + skips))
fi
if [ "$colcon_rc" != 0 ]; then
  failures+=("colcon test")
  [[ "$tests" =~ ^[0-9]+$ ]] && [ $((errs + fails)) -gt 0 ] || failed=$((failed + 1))
  colcon test-result --test-result-base build --verbose 2>/dev/null | head -n 80
fi

stage "bench/ tests (the coverage evaluator, the machine record)"
out=$(python -m pytest bench -q -p no:cacheprovider 2>&1); rc=$?
echo "$out" | tail -n 15
line=$(echo "$out" | grep -E '[0-9]+ (passed|failed)' | tail -n 1)
p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); f=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
e=$(echo "$line" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+')
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0}))
if [ $rc != 0 ]; then failures+=("bench tests"); [ $(( ${f:-0} + ${e:-0} )) -gt 0 ] || failed=$((failed + 1)); fi

if compgen -G "training/tests/test_*.py" > /dev/null; then
  stage "training/ tests"
  out=$(python -m pytest training/tests -q -p no:cacheprovider 2>&1); rc=$?
  echo "$out" | tail -n 30
  line=$(echo "$out" | grep -E '[0-9]+ (passed|failed)' | tail -n 1)
  p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); f=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
  s=$(echo "$line" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+'); e=$(echo "$line" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0})); skipped=$((skipped + ${s:-0}))
  if [ $rc != 0 ]; then failures+=("training tests"); [ $(( ${f:-0} + ${e:-0} )) -gt 0 ] || failed=$((failed + 1)); fi
fi

echo
[ ${#failures[@]} -gt 0 ] && echo "failed stages: ${failures[*]}"
echo "summary: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ ${#failures[@]} -eq 0 ]
