# Debian 12's dash 0.5.12 has no pipefail: `set -o pipefail` fails with status 2 and ends a
# non-interactive shell, so portable scripts check it in a subshell and fall back.
if (set -o pipefail) 2>/dev/null; then echo "pipefail supported"; else echo "no pipefail"; fi
false | true; echo "status without pipefail: $?"
# The portable alternative: keep each stage's status.
{ { false; echo $? >&3; } | true; } 3>status.txt; echo "first stage's status: $(cat status.txt)"
set -o pipefail
echo "not reached"
