#!/usr/bin/env bash
# Build the nodeos-vm guest kernel from Debian's linux-source-6.1 package,
# kernel/config.fragment and kernel/config-ARCH.fragment: for x86_64 an ELF vmlinux with a
# PVH entry point, for arm64 an Image (cross-built with gcc-aarch64-linux-gnu).
#
# usage: kernel/build.sh OUT_DIR [x86_64|arm64]
#   writes OUT_DIR/vmlinux (x86_64, the default) or OUT_DIR/Image (arm64), and OUT_DIR/config
#   (the final .config); for arm64 also the Raspberry Pi boards' device trees, OUT_DIR/dtbs/
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

[[ $# -eq 1 || $# -eq 2 ]] || die "usage: kernel/build.sh OUT_DIR [x86_64|arm64]"
ARCH=${2:-x86_64}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FRAGMENTS=("$SCRIPT_DIR/config.fragment" "$SCRIPT_DIR/config-$ARCH.fragment")
TARBALL=${LINUX_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
SRC_NAME=linux-source-6.1
JOBS=${JOBS:-$(nproc)}
# ARCH=x86_64, not x86: with ARCH=x86 (the default on an x86_64 host) tinyconfig, being an
# allnoconfig, would answer "no" to 64BIT and give a 32-bit kernel.
case $ARCH in
    x86_64) TARGET=vmlinux BUILT=vmlinux DTBS=() MACHINE=x86_64 CROSS_PACKAGE=gcc-x86-64-linux-gnu ;;
    arm64)
        TARGET=Image BUILT=arch/arm64/boot/Image MACHINE=aarch64 CROSS_PACKAGE=gcc-aarch64-linux-gnu
        # The boards `nodeos-vm image export --format rpi` is for: Pi 3 B, 3 B+, 4 B.
        DTBS=(broadcom/bcm2837-rpi-3-b.dtb broadcom/bcm2837-rpi-3-b-plus.dtb broadcom/bcm2711-rpi-4-b.dtb)
        ;;
    *) die "unknown architecture $ARCH: x86_64 or arm64" ;;
esac
# The host's own gcc for its own architecture; Debian's cross compiler for the other.
if [[ $(uname -m) == "$MACHINE" ]]; then
    CROSS=() CROSS_TOOLS=()
else
    CROSS=(CROSS_COMPILE="$MACHINE-linux-gnu-") CROSS_TOOLS=("$MACHINE-linux-gnu-gcc:$CROSS_PACKAGE")
fi
KMAKE=(make ARCH="$ARCH" "${CROSS[@]}" KBUILD_BUILD_USER=nodeos KBUILD_BUILD_HOST=nodeos-vm)

for fragment in "${FRAGMENTS[@]}"; do [[ -f $fragment ]] || die "missing $fragment"; done
mkdir -p "$1" || die "cannot create output dir $1"
OUT_DIR=$(cd "$1" && pwd)

# ---- build dependencies -------------------------------------------------------
phase "checking build dependencies"
missing=()
[[ -n ${LINUX_TARBALL:-} || -f $TARBALL ]] || missing+=(linux-source-6.1)
for tool in gcc:gcc "${CROSS_TOOLS[@]}" make:make bc:bc flex:flex bison:bison xz:xz-utils tar:tar perl:perl patch:patch; do
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
phase "configuring (tinyconfig + config.fragment + config-$ARCH.fragment)"
"${KMAKE[@]}" -C "$SRC" tinyconfig || die "make tinyconfig failed"
(cd "$SRC" && ARCH=$ARCH scripts/kconfig/merge_config.sh -m .config "${FRAGMENTS[@]}") ||
    die "merge_config.sh failed"
"${KMAKE[@]}" -C "$SRC" olddefconfig || die "make olddefconfig failed"

# Kconfig silently drops a symbol whose dependencies are unmet: check every line.
phase "checking the final .config against the fragments"
bad=()
while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        grep -qxF -- "$line" "$SRC/.config" ||
            bad+=("$line (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$SRC/.config" || echo 'absent: dependencies unmet?'))")
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        ! grep -qE "^${BASH_REMATCH[1]}=" "$SRC/.config" ||
            bad+=("$line (got: $(grep -E "^${BASH_REMATCH[1]}=" "$SRC/.config"))")
    fi
done < <(cat "${FRAGMENTS[@]}")
if ((${#bad[@]})); then
    echo "kernel/build.sh: error: the final .config does not match the fragments:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    exit 1
fi

# ---- compile --------------------------------------------------------------------------
phase "compiling $TARGET for $ARCH (make -j$JOBS)"
"${KMAKE[@]}" -C "$SRC" -j"$JOBS" "$TARGET" || die "make $TARGET failed"

# ---- output -----------------------------------------------------------------------------
phase "writing $OUT_DIR/$TARGET and $OUT_DIR/config"
cp "$SRC/$BUILT" "$OUT_DIR/$TARGET.tmp" && mv "$OUT_DIR/$TARGET.tmp" "$OUT_DIR/$TARGET"
cp "$SRC/.config" "$OUT_DIR/config"
if ((${#DTBS[@]})); then
    phase "compiling the device trees ${DTBS[*]}"
    "${KMAKE[@]}" -C "$SRC" "${DTBS[@]}" || die "make ${DTBS[*]} failed"
    mkdir -p "$OUT_DIR/dtbs"
    for dtb in "${DTBS[@]}"; do cp "$SRC/arch/arm64/boot/dts/$dtb" "$OUT_DIR/dtbs/"; done
fi
phase "done: $OUT_DIR/$TARGET ($(($(stat -c %s "$OUT_DIR/$TARGET") / 1024)) KiB)"
