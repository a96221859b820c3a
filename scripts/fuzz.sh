#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets in their own scratch path (.build-fuzz, so the normal build cache stays)
# and runs each for FUZZ_SECONDS, starting from the checked-in seeds in Fuzz/Corpus/<target>. New inputs go to
# .build-fuzz/corpus/<target>; a crash leaves its input in .build-fuzz/artifacts/ and fails the run.
# Usage: scripts/fuzz.sh SECONDS [TARGET...]
set -euo pipefail
SECONDS_EACH=${1:-60}; shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(FuzzEnvelope FuzzPolicy FuzzKeyLine FuzzHookInput FuzzWireBody FuzzHTTPResponse FuzzHTTPRequest)
SCRATCH=.build-fuzz
SWIFT=${SWIFT:-swift}
# swiftc keeps only the last -sanitize= it is given, and SwiftPM passes --sanitize values one flag each (address
# last), which would leave Swift code without coverage; so Swift gets both in one flag, and C code gets ASan too.
FLAGS=(--scratch-path "$SCRATCH" --sanitize fuzzer -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=address -Xswiftc -parse-as-library)

for t in "${TARGETS[@]}"; do
  # ld.gold warns about every ASan symbol it cannot export; those lines say nothing about our code.
  "$SWIFT" build "${FLAGS[@]}" --product "$t" 2>&1 | grep -v "warning: Cannot export local symbol" | grep -E "error|warning: |Compiling Fuzz|complete" || true
  [ -x "$SCRATCH/debug/$t" ] || { echo "fuzz: $t did not build (run: $SWIFT build ${FLAGS[*]} --product $t)" >&2; exit 1; }
done

mkdir -p "$SCRATCH/artifacts" "$SCRATCH/logs"
failed=0
printf '%-15s %8s %12s %10s %s\n' target seconds executions "execs/s" result
for t in "${TARGETS[@]}"; do
  mkdir -p "$SCRATCH/corpus/$t"
  log="$SCRATCH/logs/$t.log"
  set +e
  # 70 KiB covers the largest input any of these parsers accepts (a 64 KiB envelope inside a hook input).
  "$SCRATCH/debug/$t" -max_total_time="$SECONDS_EACH" -max_len=71680 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$SCRATCH/artifacts/$t-" "$SCRATCH/corpus/$t" "Fuzz/Corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(( execs / (SECONDS_EACH > 0 ? SECONDS_EACH : 1) ))
  if [ $rc -eq 0 ]; then result=ok; else
    result="FAILED (exit $rc): see $log; the input is in $SCRATCH/artifacts/ (add it to Fuzz/Corpus/$t and a regression test)"
    failed=1
  fi
  printf '%-15s %8s %12s %10s %s\n' "$t" "$SECONDS_EACH" "$execs" "$rate" "$result"
done
exit $failed
