#!/usr/bin/env bash
# Build nodeos-vm for another architecture than this host's (it carries that architecture's
# VMM program and guest binary: sandbox/build.rs builds them for the same target), e.g. to run
# it in the arm64 KVM box.
#
# usage: cli/cross-build.sh ARCH OUT_DIR [PROFILE]
#   ARCH: aarch64 or x86_64 (Rust's names), not this host's; PROFILE: release (default) or dev; writes OUT_DIR/nodeos-vm
#
# environment:
#   CARGO_TARGET_DIR   where cargo builds (default: OUT_DIR/target)
set -euo pipefail

die() { echo "cli/cross-build.sh: error: $*" >&2; exit 1; }
phase() { echo "==> $*"; }

[[ $# -eq 2 || $# -eq 3 ]] || die "usage: cli/cross-build.sh ARCH OUT_DIR [PROFILE]"
ARCH=$1
PROFILE=${3:-release}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORKSPACE=$(dirname "$SCRIPT_DIR")
mkdir -p "$2" || die "cannot create OUT_DIR $2"
OUT_DIR=$(cd "$2" && pwd)
# shellcheck source=guest/cross-toolchain.sh
source "$WORKSPACE/guest/cross-toolchain.sh"

phase "building nodeos-vm for $TRIPLE ($PROFILE)"
TARGET_DIR=${CARGO_TARGET_DIR:-$OUT_DIR/target}
env -u RUSTFLAGS -u CARGO_BUILD_TARGET -u RUSTC_WORKSPACE_WRAPPER "$LINKER_VAR=$GCC" \
    cargo build --quiet --manifest-path "$WORKSPACE/Cargo.toml" -p nodeos-vm \
    --profile "$PROFILE" --target "$TRIPLE" --target-dir "$TARGET_DIR" \
    || die "cargo build for $TRIPLE failed"
case $PROFILE in dev) DIR=debug ;; *) DIR=$PROFILE ;; esac
cp "$TARGET_DIR/$TRIPLE/$DIR/nodeos-vm" "$OUT_DIR/nodeos-vm.part"
mv "$OUT_DIR/nodeos-vm.part" "$OUT_DIR/nodeos-vm"
phase "done: $OUT_DIR/nodeos-vm"
