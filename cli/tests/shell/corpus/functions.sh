# Functions (XCU 2.9.5), positional parameters, shift, return, local (dash), set --.
greet() { echo "hello $1, $# args, all: $*"; }
greet world a b
count() { echo "$#"; }
count "a b" c; count; count ""
set -- "one two" three
count "$@"; count $@; count "$*"
quote_each() { for a in "$@"; do printf '<%s>' "$a"; done; echo; }
quote_each "$@" "" last
st() { return "$1"; }
st 5; echo "return status $?"
st 0 && echo "return 0 is success"
noreturn() { false; }
noreturn; echo "last command's status $?"
shifter() { echo "before $1"; shift; echo "after $1 ($#)"; shift 2; echo "after two more $1 ($#)"; }
shifter a b c d
x=global
scoped() { local x=inner; echo "inside $x"; inner_read; }
inner_read() { echo "dynamic scope sees $x"; }
scoped; echo "outside $x"
set_global() { y=from-function; }
set_global; echo "global set: $y"
fact() { if [ "$1" -le 1 ]; then echo 1; else echo $(( $1 * $(fact $(( $1 - 1 ))) )); fi; }
echo "10! = $(fact 10)"
echo "positional after calls: $1|$2|$#"
(shift 5) 2>&1; echo "shift too far: $?"
f() { echo "0 is still the script: ${0##*/}"; }; f
g() { echo redirected; } > out.txt; g; cat out.txt
unset -f greet; greet 2>/dev/null; echo "unset -f: $?"
