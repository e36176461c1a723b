# Subshells ( ), groups { }, background jobs & and wait, $!, pipelines and ! (XCU 2.9.2-2.9.4).
x=1
(x=2; echo "subshell x=$x"); echo "parent x=$x"
{ x=3; echo "group x=$x"; }; echo "parent after group x=$x"
(cd / && echo "in / : $PWD"); [ "$PWD" != / ] && echo "cwd unchanged"
(exit 4); echo "subshell status $?"
{ false; }; echo "group status $?"
{ echo a; echo b; } | wc -l
( echo c; echo d ) > both.txt; cat both.txt
sleep 0.2 & pid=$!
case $pid in *[!0-9]*|'') echo "bad pid";; *) echo "background pid is a number";; esac
wait $pid; echo "wait status $?"
(exit 3) & wait $!; echo "wait for one job: $?"
(sleep 0.1; echo late > late.txt) & echo early; wait; cat late.txt
for i in 3 2 1; do (sleep 0.$i; echo "job $i" > job$i.txt) & done; wait; cat job1.txt job2.txt job3.txt
! true; echo "negated true $?"
! false; echo "negated false $?"
true | false; echo "pipeline status is the last command's: $?"
false | true; echo "pipeline status is the last command's: $?"
echo left | { read v; echo "right got $v"; }
v=unchanged; echo piped | read v; echo "read in a pipeline runs in a subshell: $v"
true && echo "and-list" || echo never
false && echo never || echo "or-list"
false || false || echo "chain $?"
