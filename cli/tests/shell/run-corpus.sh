# Runs every corpus/*.sh script with the shell SHELL, each in a fresh empty folder of its own
# with the same small environment, and prints for each a header line
# `=== NAME STATUS BYTES` followed by BYTES bytes of its stdout and stderr together.
# Usage: sh run-corpus.sh SHELL CORPUS_DIR
shell=$1
corpus=$2
base=$(mktemp -d) || exit 1
umask 022
for script in "$corpus"/*.sh; do
  name=${script##*/}
  work=$base/${name%.sh}
  mkdir "$work" && cp "$script" "$base/$name" || exit 1
  # The script is run as ../NAME so that the shell's messages, which name it, read the same
  # everywhere; a script that hangs is stopped (status 124).
  (cd "$work" && exec env -i PATH=/usr/bin:/bin HOME="$work" LC_ALL=C \
    timeout 60 "$shell" "../$name" </dev/null >"$base/$name.out" 2>&1)
  status=$?
  printf '=== %s %s %s\n' "$name" "$status" "$(wc -c <"$base/$name.out")"
  cat "$base/$name.out"
done
rm -rf "$base"
