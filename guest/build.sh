#!/usr/bin/env bash
# Build the guest binary (nodeos-init) for another architecture than this host's: a static
# executable, cross-compiled with Rust's target for it and Debian's cross linker. (The host's
# own architecture's binary is built by the sandbox crate's build script, with nodeos-vm.)
#
# usage: guest/build.sh ARCH OUT_DIR
#   ARCH: aarch64 (Rust's name); writes OUT_DIR/nodeos-init
#
# environment:
#   CARGO_TARGET_DIR   where cargo builds (default: OUT_DIR/target)
#
# Installs what is missing: the Rust target (rustup target add), and, as root, the cross
# linker and C library (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross); otherwise prints the
# command to run.
set -euo pipefail

die() { echo "guest/build.sh: error: $*" >&2; exit 1; }
phase() { echo "==> $*"; }

[[ $# -eq 2 ]] || die "usage: guest/build.sh ARCH OUT_DIR"
ARCH=$1
case $ARCH in
    aarch64) TRIPLE=aarch64-unknown-linux-gnu GCC=aarch64-linux-gnu-gcc PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    *) die "no cross build for $ARCH: aarch64 only (the host's own is built with nodeos-vm)" ;;
esac
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORKSPACE=$(dirname "$SCRIPT_DIR")
mkdir -p "$2" || die "cannot create OUT_DIR $2"
OUT_DIR=$(cd "$2" && pwd)

phase "checking the $ARCH toolchain"
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$TRIPLE"; then
        phase "rustup target add $TRIPLE"
        rustup target add "$TRIPLE" || die "rustup target add $TRIPLE failed"
    fi
fi
if ! command -v "$GCC" >/dev/null 2>&1 || [[ ! -d /usr/aarch64-linux-gnu/lib ]]; then
    [[ $(id -u) -eq 0 ]] || die "missing the cross linker; run: sudo apt-get install -y ${PACKAGES[*]}"
    phase "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${PACKAGES[@]}" || { apt-get update && apt-get install -y "${PACKAGES[@]}"; } \
        || die "apt-get install -y ${PACKAGES[*]} failed"
fi

phase "building nodeos-init for $TRIPLE"
# The guest has no dynamic loader at PID 1 time: glibc linked statically, as for the host's.
linker_var=CARGO_TARGET_$(echo "$TRIPLE" | tr '[:lower:]-' '[:upper:]_')_LINKER
env -u RUSTFLAGS -u CARGO_BUILD_TARGET -u RUSTC_WORKSPACE_WRAPPER \
    "$linker_var=$GCC" CARGO_ENCODED_RUSTFLAGS="-Ctarget-feature=+crt-static" \
    cargo build --quiet --manifest-path "$WORKSPACE/Cargo.toml" -p nodeos-guest \
    --profile release-guest --target "$TRIPLE" --target-dir "${CARGO_TARGET_DIR:-$OUT_DIR/target}" \
    || die "cargo build for $TRIPLE failed"
cp "${CARGO_TARGET_DIR:-$OUT_DIR/target}/$TRIPLE/release-guest/nodeos-init" "$OUT_DIR/nodeos-init"
phase "done: $OUT_DIR/nodeos-init"
