# Command substitution (XCU 2.6.3): $(...) and backquotes, nesting, trailing newlines removed,
# the status of an assignment-only command is the substitution's.
echo "a $(echo b) c"
echo "a `echo b` c"
echo "$(echo "$(echo nested "$(echo deeper)")")"
echo `echo \`echo old-style nested\``
x=$(printf 'one\ntwo\n\n\n'); printf '[%s]\n' "$x"
x=$(false); echo "assignment status $?"
x=$(exit 7); echo "assignment status $?"
echo $(echo "  spaced   words  ")
echo "$(echo "  spaced   words  ")"
lines=$(printf 'l1\nl2\nl3\n' | wc -l); echo "lines $lines"
echo "$(cd / && pwd) stays: $(basename "$PWD")"
echo $(( $(echo 6) * $(echo 7) ))
case $(echo abc) in a*) echo "case on substitution";; esac
echo "$(echo "quote ) inside")"
