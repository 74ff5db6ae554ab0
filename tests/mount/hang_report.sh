#!/usr/bin/env bash
# hang_report.sh PID [LOG]: what a hung tmpfsd is doing, for a test that
# ran out of time: every thread's user-space stack (gdb, when installed),
# every thread's kernel stack and wait channel, and the daemon's counters
# (SIGUSR1 makes it log them; LOG is its --log-file). Prints to stdout and
# never fails: it is called on the way to a failure.
pid=$1 log=${2:-}
[ "$log" = - ] && log=
if ! kill -0 "$pid" 2>/dev/null; then
  echo "hang report: process $pid is gone"
  exit 0
fi
echo "==== hang report: tmpfsd pid $pid ($(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null))"
if [ -n "$log" ] && [ -f "$log" ]; then
  before=$(wc -l < "$log")
  kill -USR1 "$pid" 2>/dev/null
fi
echo "---- threads: name, state, kernel wait channel, kernel stack"
for t in /proc/"$pid"/task/*; do
  echo "thread $(basename "$t") $(cat "$t/comm" 2>/dev/null) state=$(awk '/^State:/ {print $2}' "$t/status" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)"
  sed 's/^/    /' "$t/stack" 2>/dev/null | head -20
done
if command -v gdb >/dev/null; then
  echo "---- user-space stacks (gdb)"
  timeout -s KILL 60 gdb -batch -nx -p "$pid" -ex "set pagination off" -ex "thread apply all bt 30" 2>&1 |
    grep -E '^(Thread|#)' | head -400
else
  echo "---- gdb is not installed: no user-space stacks"
fi
if [ -n "$log" ] && [ -f "$log" ]; then
  sleep 0.5
  echo "---- counters (SIGUSR1) and the end of the log"
  tail -n +"$((before + 1))" "$log" | tail -20
  echo "---- last lines before the report"
  head -n "$before" "$log" | tail -10
fi
echo "==== end of hang report"
exit 0
