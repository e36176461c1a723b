# Under set -u an unset parameter ends a non-interactive shell (status 2, message on stderr).
set -u
echo start
echo "$never_set"
echo "not reached"
