#!/usr/bin/env bash
# Build the nodeos-vm guest kernel: an ELF vmlinux with a PVH entry point, from
# Debian's linux-source-6.1 package and kernel/config.fragment.
#
# usage: kernel/build.sh OUT_DIR
#   writes OUT_DIR/vmlinux and OUT_DIR/config (the final .config)
#
# environment:
#   WORK_DIR=dir   scratch dir (default: a fresh mktemp -d). If it already holds
#                  an extracted tree from an earlier KEEP_WORK=1 run, that tree is
#                  reused and only what changed is rebuilt.
#   KEEP_WORK=1    keep the scratch tree afterwards
#   JOBS=n         parallel make jobs (default: nproc)
#   LINUX_TARBALL  source tarball (default /usr/src/linux-source-6.1.tar.xz)
#
# stdout: phase lines "==> ..." and make's own output (for progress display).
set -euo pipefail

die() { echo "kernel/build.sh: error: $*" >&2; exit 1; }
phase() { echo "==> $*"; }

[[ $# -eq 1 ]] || die "usage: kernel/build.sh OUT_DIR"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FRAGMENT=$SCRIPT_DIR/config.fragment
TARBALL=${LINUX_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
SRC_NAME=linux-source-6.1
JOBS=${JOBS:-$(nproc)}
KMAKE=(make ARCH=x86_64 KBUILD_BUILD_USER=nodeos KBUILD_BUILD_HOST=nodeos-vm)

[[ -f $FRAGMENT ]] || die "missing $FRAGMENT"
mkdir -p "$1" || die "cannot create output dir $1"
OUT_DIR=$(cd "$1" && pwd)

# ---- build dependencies -------------------------------------------------------
phase "checking build dependencies"
missing=()
[[ -n ${LINUX_TARBALL:-} || -f $TARBALL ]] || missing+=(linux-source-6.1)
for tool in gcc:gcc make:make bc:bc flex:flex bison:bison xz:xz-utils tar:tar perl:perl patch:patch; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
[[ -f /usr/include/libelf.h || -f /usr/include/libelf/libelf.h ]] || missing+=(libelf-dev)
[[ -f /usr/include/openssl/opensslv.h ]] || missing+=(libssl-dev)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing build dependencies; run: sudo apt-get install -y ${missing[*]}"
    fi
    phase "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${missing[@]}"; then
        apt-get update || die "apt-get update failed"
        apt-get install -y "${missing[@]}" || die "apt-get install -y ${missing[*]} failed"
    fi
fi
[[ -f $TARBALL ]] || die "kernel source tarball $TARBALL not found"

# ---- scratch dir ----------------------------------------------------------------
if [[ -n ${WORK_DIR:-} ]]; then
    mkdir -p "$WORK_DIR" || die "cannot create WORK_DIR $WORK_DIR"
    WORK_DIR=$(cd "$WORK_DIR" && pwd)
    CLEAN_PATH=$WORK_DIR/$SRC_NAME # never delete a directory the caller gave us
else
    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nodeos-kernel.XXXXXX")
    CLEAN_PATH=$WORK_DIR
fi
SRC=$WORK_DIR/$SRC_NAME
cleanup() {
    local rc=$?
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        echo "kernel/build.sh: kept the build tree in $SRC" >&2
    else
        rm -rf "$CLEAN_PATH"
        ((rc == 0)) || echo "kernel/build.sh: (rerun with KEEP_WORK=1 to keep the build tree)" >&2
    fi
}
trap cleanup EXIT

# ---- extract ----------------------------------------------------------------------
if [[ -f $SRC/Makefile ]]; then
    phase "reusing the source tree in $SRC"
else
    phase "extracting $TARBALL into $WORK_DIR"
    tar -xf "$TARBALL" -C "$WORK_DIR" || die "cannot extract $TARBALL"
    [[ -f $SRC/Makefile ]] || die "$TARBALL does not contain $SRC_NAME/Makefile"
fi

# ---- patches ----------------------------------------------------------------------------
# kernel/patches/*.patch, in name order; a reused tree may have them already.
for patch in "$SCRIPT_DIR"/patches/*.patch; do
    [[ -e $patch ]] || continue
    if patch -d "$SRC" -p1 -R --dry-run --silent <"$patch" >/dev/null 2>&1; then
        phase "patch $(basename "$patch"): applied already"
    else
        phase "patch $(basename "$patch")"
        patch -d "$SRC" -p1 --forward --silent <"$patch" || die "cannot apply $patch"
    fi
done

# ---- configure ----------------------------------------------------------------------
phase "configuring (tinyconfig + $(basename "$FRAGMENT"))"
# ARCH=x86_64 everywhere: with ARCH=x86 (the default on an x86_64 host) tinyconfig,
# being an allnoconfig, would answer "no" to 64BIT and give a 32-bit kernel.
"${KMAKE[@]}" -C "$SRC" tinyconfig || die "make tinyconfig failed"
(cd "$SRC" && ARCH=x86_64 scripts/kconfig/merge_config.sh -m .config "$FRAGMENT") ||
    die "merge_config.sh failed"
"${KMAKE[@]}" -C "$SRC" olddefconfig || die "make olddefconfig failed"

# Kconfig silently drops a symbol whose dependencies are unmet: check every line.
phase "checking the final .config against the fragment"
bad=()
while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        grep -qxF -- "$line" "$SRC/.config" ||
            bad+=("$line (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$SRC/.config" || echo 'absent: dependencies unmet?'))")
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        ! grep -qE "^${BASH_REMATCH[1]}=" "$SRC/.config" ||
            bad+=("$line (got: $(grep -E "^${BASH_REMATCH[1]}=" "$SRC/.config"))")
    fi
done <"$FRAGMENT"
if ((${#bad[@]})); then
    echo "kernel/build.sh: error: the final .config does not match $FRAGMENT:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    exit 1
fi

# ---- compile --------------------------------------------------------------------------
phase "compiling vmlinux (make -j$JOBS)"
"${KMAKE[@]}" -C "$SRC" -j"$JOBS" vmlinux || die "make vmlinux failed"

# ---- output -----------------------------------------------------------------------------
phase "writing $OUT_DIR/vmlinux and $OUT_DIR/config"
cp "$SRC/vmlinux" "$OUT_DIR/vmlinux.tmp" && mv "$OUT_DIR/vmlinux.tmp" "$OUT_DIR/vmlinux"
cp "$SRC/.config" "$OUT_DIR/config"
phase "done: $OUT_DIR/vmlinux ($(($(stat -c %s "$OUT_DIR/vmlinux") / 1024)) KiB)"
