#!/bin/sh
# What failed in a test binary's log, and why, in a few lines: `failures.sh LOG`. Each failed
# test's name and panic message (8 lines at most, no backtrace), or the log's last 15 lines when
# nothing panicked (a suite killed by its time limit, a crashed binary). `make vm-test` prints it
# for each failed suite, last, where an excerpt of CI's output shows it.
log=$1
if grep -q 'panicked at' "$log"; then
  awk '/^---- .* stdout ----$/ { name = $2 } /panicked at/ { n = 8; print "vm-test: " name ":" }
       /^(stack backtrace:|note: )/ { n = 0 } n > 0 { print "    " substr($0, 1, 300); n-- }' "$log" | head -60
else
  echo "vm-test: $(basename "$log" .log): nothing panicked; the log's last lines:"
  tail -15 "$log" | cut -c1-300 | sed 's/^/    /'
fi
