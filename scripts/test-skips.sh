#!/usr/bin/env bash
# `make test`'s last word on skips: prints the skip file the tests wrote (a line
# `binary::test: reason` each, tests/common/mod.rs) with counts, and under strict mode (CI set,
# or GEARSHIFT_TEST_STRICT=1) fails when a test not named in tests/vm-only.txt skipped.
# Usage: scripts/test-skips.sh SKIP_FILE
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
FILE=${1:?usage: test-skips.sh SKIP_FILE}
LIST=$REPO/tests/vm-only.txt

strict() {
  case "${GEARSHIFT_TEST_STRICT:-}" in "" | 0) ;; *) return 0 ;; esac
  case "${CI:-}" in "" | 0 | false) return 1 ;; *) return 0 ;; esac
}

[ -s "$FILE" ] || { echo "test skips: 0 (${FILE#"$REPO"/})"; exit 0; }
# A skip line's test is what comes before the first ": " (test names hold "::", never ": ").
other=$(awk -F': ' 'NR == FNR { if ($0 !~ /^[[:space:]]*(#|$)/) vm[$1] = 1; next } !($1 in vm)' "$LIST" "$FILE")
total=$(wc -l < "$FILE")
n_other=$(printf '%s' "$other" | grep -c . || true)
echo "test skips: $total ($((total - n_other)) VM-only, named in tests/vm-only.txt; $n_other other), from ${FILE#"$REPO"/}:"
sed 's/^/  /' "$FILE"
if [ "$n_other" -gt 0 ]; then
  if strict; then
    echo "test skips: FAILED: under CI only the VM-only tests may skip; these did:" >&2
    printf '%s\n' "$other" | sed 's/^/  /' >&2
    exit 1
  fi
  echo "test skips: $n_other would fail under CI (CI=true or GEARSHIFT_TEST_STRICT=1)"
fi
