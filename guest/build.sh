#!/usr/bin/env bash
# Build the guest binary (nodeos-init) for another architecture than this host's: a static
# executable, cross-compiled with Rust's target for it and Debian's cross linker. (The host's
# own architecture's binary is built by the sandbox crate's build script, with nodeos-vm.)
#
# usage: guest/build.sh ARCH OUT_DIR
#   ARCH: aarch64 or x86_64 (Rust's names), not this host's; writes OUT_DIR/nodeos-init
#
# environment:
#   CARGO_TARGET_DIR   where cargo builds (default: OUT_DIR/target)
#
# Installs what is missing (guest/cross-toolchain.sh): the Rust target, and, as root, Debian's
# cross linker and C library; otherwise prints the command to run.
set -euo pipefail

die() { echo "guest/build.sh: error: $*" >&2; exit 1; }
phase() { echo "==> $*"; }

[[ $# -eq 2 ]] || die "usage: guest/build.sh ARCH OUT_DIR"
ARCH=$1
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORKSPACE=$(dirname "$SCRIPT_DIR")
mkdir -p "$2" || die "cannot create OUT_DIR $2"
OUT_DIR=$(cd "$2" && pwd)
# shellcheck source=guest/cross-toolchain.sh
source "$SCRIPT_DIR/cross-toolchain.sh"

phase "building nodeos-init for $TRIPLE"
# The guest has no dynamic loader at PID 1 time: glibc linked statically, as for the host's.
env -u RUSTFLAGS -u CARGO_BUILD_TARGET -u RUSTC_WORKSPACE_WRAPPER \
    "$LINKER_VAR=$GCC" CARGO_ENCODED_RUSTFLAGS="-Ctarget-feature=+crt-static" \
    cargo build --quiet --manifest-path "$WORKSPACE/Cargo.toml" -p nodeos-guest \
    --profile release-guest --target "$TRIPLE" --target-dir "${CARGO_TARGET_DIR:-$OUT_DIR/target}" \
    || die "cargo build for $TRIPLE failed"
cp "${CARGO_TARGET_DIR:-$OUT_DIR/target}/$TRIPLE/release-guest/nodeos-init" "$OUT_DIR/nodeos-init"
phase "done: $OUT_DIR/nodeos-init"
