# Sourced by the cross builds (guest/build.sh, cli/cross-build.sh): checks ARCH, sets TRIPLE,
# GCC and LINKER_VAR (cargo's linker variable for TRIPLE), and installs what is missing: the
# Rust target (rustup target add), and, as root, the cross linker and C library
# (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross); otherwise dies with the command to run.
# Expects die() and phase() from the script that sources it.

case $ARCH in
    aarch64) TRIPLE=aarch64-unknown-linux-gnu GCC=aarch64-linux-gnu-gcc PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    *) die "no cross build for $ARCH: aarch64 only (the host's own is built with nodeos-vm)" ;;
esac
LINKER_VAR=CARGO_TARGET_$(echo "$TRIPLE" | tr '[:lower:]-' '[:upper:]_')_LINKER

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
