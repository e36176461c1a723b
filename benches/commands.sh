# Start cost of the commands scripts call, and `rm -rf` of a node_modules-like tree of 10,000
# files; prints a markdown table. Runs anywhere with a POSIX sh and GNU date; in a guest:
#   ./target/release/nodeos-vm run -v $PWD/benches:/benches:ro -- sh /benches/commands.sh
# and on the host, for comparison: sh benches/commands.sh
# Each figure is the median of SAMPLES samples; a sample is one timed loop of BATCH runs of the
# command launched from this shell, divided by BATCH (so the two `date` calls around a loop
# weigh 1/BATCH), after one untimed loop (under TCG the first runs of a program translate its
# code). The command's own work is tiny: it is its start cost (exec, ld.so, libc).
# Usage: sh commands.sh [SAMPLES] [BATCH] [FOLDER]
samples=${1:-7}
batch=${2:-10}
dir=$(mktemp -d "${3:-/tmp}/commands.XXXXXX") || exit 1
cd "$dir" || exit 1

now() { date +%s%N; }

# median of the numbers on stdin
median() { sort -n | sed -n "$(( (samples + 1) / 2 ))p"; }

# measure NAME BATCH COMMAND...: one table row (ms per run)
measure() {
  name=$1 n=$2; shift 2
  i=0
  while [ $i -lt "$n" ]; do "$@" </dev/null >/dev/null 2>&1; i=$((i + 1)); done # warm-up, not timed
  s=0
  while [ $s -lt "$samples" ]; do
    i=0
    t0=$(now)
    while [ $i -lt "$n" ]; do "$@" </dev/null >/dev/null 2>&1; i=$((i + 1)); done
    t1=$(now)
    echo $(( (t1 - t0) / n / 1000 ))
    s=$((s + 1))
  done | median | { read us; printf '| `%s` | %d.%02d ms |\n' "$name" $((us / 1000)) $((us % 1000 / 10)); }
}

mkdir -p tree/a/b && seq 1 1000 > f && cp f tree/a/b/g
echo '| command | start cost (median) |'
echo '|---|---|'
measure 'sh -c true' "$batch" sh -c true
measure 'true' "$batch" /usr/bin/true
measure 'ls' "$batch" ls tree
measure 'cat' "$batch" cat f
measure 'cp' "$batch" cp f f2
measure 'rm' "$batch" rm -f f3
measure 'mkdir -p' "$batch" mkdir -p tree/a
measure 'grep' "$batch" grep -q 500 f
measure 'sed' "$batch" sed -n 1p f
measure 'find' "$batch" find tree
measure 'xargs' "$batch" xargs -r true
measure 'sort' "$batch" sort f
measure 'head' "$batch" head -1 f
measure 'tar' "$batch" tar cf /dev/null f
if command -v node >/dev/null; then measure 'node -e 0' 1 node -e 0; fi

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
done | { samples=3; median; } | { read us; printf '| `rm -rf` of 10,000 files in 1,000 folders | %d ms |\n' $((us / 1000)); }
cd / && rm -rf "$dir"
