# Builtins: test/[, printf, echo, cd, pwd, export, unset, exit, return, eval, exec, command,
# type, kill, umask, wait, true, false, :, . (XCU 2.14 and the utilities dash builds in).
[ -n x ] && [ -z "" ] && [ a = a ] && [ a != b ] && [ 2 -lt 10 ] && [ 10 -ge 10 ] && echo "[ strings and numbers"
test ! -e nope && test -d . && echo "test files"; touch f; [ -f f ] && [ -r f ] && [ ! -s f ] && [ ! -x f ] && echo "test -f -r -s -x"
[ 1 -eq 1 -a 2 -eq 2 ] && [ 1 -eq 2 -o 2 -eq 2 ] && echo "test -a -o"
[ a \< b ] && echo "test string order"
[ 1 -eq x ] 2>&1; echo "bad integer: $?"
test; echo "test with no args: $?"
printf '%s|%5s|%-5s|%d|%05d|%x|%o|%c|%%\n' str r l 42 42 255 8 char
printf '%s\n' one two three
printf '%b\n' 'tab\there' 'oct\0101'
printf 'no newline'; printf '\n'
printf '%d\n' 3.5 2>&1; echo "printf bad number: $?"
echo 'a\tb' "c\nd"
echo -n "dash echo -n: "; echo ok
mkdir -p dir/sub; cd dir/sub; echo "pwd ends with ${PWD##*/}"; cd ..; echo "now in ${PWD##*/}"
cd - >/dev/null; echo "cd - back to ${PWD##*/}"; cd ../..
cd nope 2>&1; echo "cd status $?"
export E1=exported; sh -c 'echo "child sees $E1"'
N1=notexported; sh -c 'echo "child sees [$N1]"'
E2=inline sh -c 'echo "prefix assignment $E2"'; echo "not kept: [$E2]"
unset E1; sh -c 'echo "after unset [$E1]"'
readonly R=1; (R=2) 2>&1; echo "readonly: $?"
eval 'a=1; b=$((a + 1))'; echo "eval: $a $b"
cmd='echo "eval $((b * 10))"'; eval "$cmd"
(exec echo "exec replaces the subshell"; echo never)
exec 3> fd3.txt; echo "to fd 3" >&3; exec 3>&-; cat fd3.txt
exec 4< fd3.txt; read line <&4; exec 4<&-; echo "from fd 4: $line"
command -v cd; command -v printf; command -v sh
command -v no_such_command; echo "command -v missing: $?"
echo() { printf 'function echo\n'; }; echo x; command echo "command skips functions"; unset -f echo
type cd; type true; type sh; type no_such_command; echo "type missing: $?"
kill -0 $$ && echo "kill -0 self"
kill -l 15; kill -l 9
umask 027; umask; umask -S; touch masked; ls -l masked | cut -c1-10; umask 022
(exit 300); echo "exit 300: $?"
true; echo "true $?"; false; echo "false $?"; :; echo ": $?"; : ignored args; echo ": args $?"
printf 'sourced_var=from-dot\necho "in dot script, \\$1 is [$1]"\n' > lib.sh
. ./lib.sh; echo "$sourced_var"
r() { return 3; echo never; }; r; echo "return: $?"
sleep 0.1 & wait; echo "wait no args: $?"
getopts ab: opt -a 2>/dev/null; echo "getopts: $opt"
set -- -a -b val rest
while getopts ab: o; do echo "opt $o ${OPTARG-}"; done; shift $((OPTIND - 1)); echo "rest: $*"
alias hi='echo alias works'
eval hi
exit 6
