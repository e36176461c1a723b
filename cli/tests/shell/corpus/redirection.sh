# Redirection (XCU 2.7): > >> < 2>&1 >&2 n> n< <> and their order.
echo one > f.txt; echo two >> f.txt; cat < f.txt
echo to-stderr >&2 2>/dev/null
{ echo out; echo err >&2; } 2>/dev/null
{ echo out; echo err >&2; } > both.txt 2>&1; cat both.txt
{ echo out; echo err >&2; } 2>&1 > only-out.txt | sed 's/^/piped: /'; cat only-out.txt
ls nope 2> err.txt; echo "ls status $?"; sed 's/^ls: //' err.txt
cat missing.txt 2>&1; echo "cat status $?"
: > empty.txt; wc -c < empty.txt
echo rw > rw.txt; exec 5<> rw.txt; read x <&5; echo "read-write fd: $x"; exec 5>&-
cat < nope.txt 2>&1; echo "input redirection failure $?"
echo > /nonexistent/dir/x 2>&1; echo "output redirection failure $?"
> created.txt; [ -f created.txt ] && echo "redirection alone creates"
echo a >x1 >x2; echo "x1 [$(cat x1)] x2 [$(cat x2)]"
exec 6>&1; exec > redirected.txt; echo "into file"; exec 1>&6 6>&-; cat redirected.txt
cat <<EOF2 >here.txt
here into file
EOF2
cat here.txt
echo "$(echo err >&2; echo out)" 2>/dev/null
