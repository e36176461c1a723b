# Start cost of the commands scripts call, and `rm -rf` of a node_modules-like tree of 10,000
# files; prints a markdown table. Runs anywhere with a POSIX sh and GNU date; in a guest:
#   ./target/release/nodeos-vm run -v $PWD/benches:/benches:ro -- sh /benches/commands.sh
# and on the host, for comparison: sh benches/commands.sh
# A sample of a command is one timed loop of BATCH runs of it launched from this shell, divided
# by BATCH (so the two `date` calls around a loop weigh 1/BATCH). Each round takes one sample of
# every command in turn, so a busy moment of the host slows all of them alike; the figures are
# the median and the least of SAMPLES rounds, after one untimed round (under TCG the first runs
# of a program translate its code). The commands' own work is tiny: it is their start cost.
# Usage: sh commands.sh [SAMPLES] [BATCH] [FOLDER]
samples=${1:-11}
batch=${2:-10}
dir=$(mktemp -d "${3:-/tmp}/commands.XXXXXX") || exit 1
cd "$dir" || exit 1

# runs per sample, then the command
commands="$batch sh -c true
$batch /usr/bin/true
$batch ls tree
$batch cat f
$batch cp f f2
$batch rm -f f3
$batch mkdir -p tree/a
$batch grep -q 500 f
$batch sed -n 1p f
$batch find tree
$batch xargs -r true
$batch sort f
$batch head -1 f
$batch tar cf /dev/null f"
if command -v node >/dev/null; then commands="$commands
1 node -e 0"; fi

now() { date +%s%N; }

# one round: a line `MICROSECONDS COMMAND` per command
round() {
  echo "$commands" | while read -r n cmd; do
    i=0
    t0=$(now)
    while [ $i -lt "$n" ]; do eval "$cmd" </dev/null >/dev/null 2>&1; i=$((i + 1)); done
    t1=$(now)
    echo "$(( (t1 - t0) / n / 1000 )) $cmd"
  done
}

# ms N: microseconds N as milliseconds with two decimals
ms() { printf '%d.%02d' $(($1 / 1000)) $(($1 % 1000 / 10)); }

# row NAME COUNT: a table row from the numbers on stdin, COUNT of them: median and least
row() {
  sort -n | sed -n "1p;$((($2 + 1) / 2))p" | { read -r lo; read -r med; echo "| \`$1\` | $(ms "$med") ms | $(ms "$lo") ms |"; }
}

mkdir -p tree/a/b && seq 1 1000 > f && cp f tree/a/b/g
round >/dev/null
s=0
while [ $s -lt "$samples" ]; do round; s=$((s + 1)); done > rounds
echo '| command | median | least |'
echo '|---|---|---|'
echo "$commands" | while read -r n cmd; do
  while read -r us c; do [ "$c" = "$cmd" ] && echo "$us"; done <rounds | row "$cmd" "$samples"
done

# rm -rf of 500 packages of 20 files (1 KiB each) in package/lib/: 10,000 files, 1,000 folders
mkdir -p pkg/lib
for f in $(seq 1 19); do head -c 1024 f > "pkg/lib/m$f.js"; done
echo '{}' > pkg/package.json
s=0
while [ $s -lt 3 ]; do
  mkdir node_modules
  for p in $(seq 1 500); do cp -r pkg "node_modules/p$p"; done
  sync
  t0=$(now); rm -rf node_modules; t1=$(now)
  echo $(( (t1 - t0) / 1000 ))
  s=$((s + 1))
done | row 'rm -rf node_modules (10,000 files in 1,000 folders)' 3
cd / && rm -rf "$dir"
