# Under set -e a failing simple command ends the script with its status; EXIT traps still run.
set -e
trap 'echo "exit trap sees status $?"' EXIT
echo start
grep -q nothing /dev/null
echo "not reached"
