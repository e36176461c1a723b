# set -e, -u, -x, -f, -n, -o (XCU set), and what they do in conditions, lists and subshells.
(set -e; false; echo "not reached"); echo "set -e stopped the subshell: $?"
(set -e; if false; then :; fi; false || true; ! true; false && true; echo "conditions do not stop set -e")
(set -e; (exit 9); echo "not reached"); echo "set -e after a failed subshell: $?"
(set -e; f() { false; echo "inside f"; }; f || echo "f in || context"); echo "status $?"
(set -e; x=$(false); echo "not reached after a failed assignment"); echo "assignment: $?"
(set -e; false | true; echo "only the last command of a pipeline counts")
(set -u; echo "${unset_var-fallback is allowed}"; echo "$unset_var"; echo "not reached") 2>&1; echo "set -u: $?"
(set -u; set --; echo "\$# with set -u: $#"; echo "$@" "$*" done)
(set -x; echo traced; x=1; [ "$x" = 1 ]) 2>&1
(set -x; f() { echo "in f $1"; }; f 'a b') 2>&1
(set -n; echo "set -n reads but does not run") ; echo "after set -n: $?"
(set -f; echo /*) ; (set -o noglob; echo /*)
(set -C; echo one > clob.txt; echo two > clob.txt; echo "noclobber: $?"; echo three >| clob.txt; cat clob.txt) 2>&1
(set -a; exported_by_a=yes; sh -c 'echo "set -a: $exported_by_a"')
(set -e; set +e; false; echo "set +e turns it off")
set -o | grep -E '^(errexit|nounset|xtrace|noglob)'
(set -eu; echo "$-" | grep -q e && echo "\$- has e"; echo "$-" | grep -q u && echo "\$- has u")
(set -o pipefail) 2>&1; echo "set -o pipefail: $?"
