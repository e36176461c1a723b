# trap (XCU trap): EXIT, signals, ignoring, resetting, listing, and exit status in traps.
trap 'echo "exit trap, status $?"' EXIT
trap 'echo "got USR1"' USR1
kill -USR1 $$; echo "after USR1"
trap 'echo "got TERM"; exit 3' TERM
trap
(trap 'echo "subshell TERM"' TERM; sh -c 'kill -TERM $PPID'; echo "subshell keeps running")
trap '' INT; kill -INT $$; echo "ignored INT"
trap - INT
(trap 'echo "subshell exit trap"' EXIT; echo "in subshell")
(trap 'echo "trap on exit 5: $?"' EXIT; exit 5); echo "subshell status $?"
sh -c 'trap "echo child trap TERM; exit 7" TERM; kill -TERM $$; sleep 5'; echo "child status $?"
sh -c 'kill -TERM $$; echo never'; echo "killed by TERM: $?"
f() { trap 'echo "HUP in function"' HUP; kill -HUP $$; }; f
trap 'echo "ERR is not POSIX"' ERR 2>/dev/null; echo "trap ERR: $?"
kill -TERM $$
echo "not reached: TERM trap exits 3"
