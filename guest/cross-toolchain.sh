# Sourced by the cross builds (guest/build.sh, cli/cross-build.sh): checks ARCH (Rust's name:
# aarch64 or x86_64), sets TRIPLE, GCC and LINKER_VAR (cargo's linker variable for TRIPLE), and
# installs what is missing: the Rust target (rustup target add), and, as root, Debian's cross
# linker and C library for it (gcc-aarch64-linux-gnu and libc6-dev-arm64-cross, or
# gcc-x86-64-linux-gnu and libc6-dev-amd64-cross); otherwise dies with the command to run.
# Expects die() and phase() from the script that sources it.

[[ $ARCH != "$(uname -m)" ]] || die "$ARCH is this host's architecture: nodeos-vm builds its own"
case $ARCH in
    aarch64) TRIPLE=aarch64-unknown-linux-gnu PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    x86_64) TRIPLE=x86_64-unknown-linux-gnu PACKAGES=(gcc-x86-64-linux-gnu libc6-dev-amd64-cross) ;;
    *) die "no cross build for $ARCH: aarch64 or x86_64" ;;
esac
GCC=$ARCH-linux-gnu-gcc
LINKER_VAR=CARGO_TARGET_$(echo "$TRIPLE" | tr '[:lower:]-' '[:upper:]_')_LINKER

phase "checking the $ARCH toolchain"
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$TRIPLE"; then
        phase "rustup target add $TRIPLE"
        rustup target add "$TRIPLE" || die "rustup target add $TRIPLE failed"
    fi
fi
if ! command -v "$GCC" >/dev/null 2>&1 || [[ ! -d /usr/$ARCH-linux-gnu/lib ]]; then
    [[ $(id -u) -eq 0 ]] || die "missing the cross linker; run: sudo apt-get install -y ${PACKAGES[*]}"
    phase "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${PACKAGES[@]}" || { apt-get update && apt-get install -y "${PACKAGES[@]}"; } \
        || die "apt-get install -y ${PACKAGES[*]} failed"
fi
