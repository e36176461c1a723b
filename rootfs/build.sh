#!/usr/bin/env bash
# Build the NodeOS root image: a read-only squashfs with Node.js, npm, the shared libraries
# Node needs, the guest init, nsh (the Node shell, JavaScript) and a minimal /etc. Nothing
# else but the commands package.json scripts call: dash as /bin/sh, GNU coreutils, grep, sed,
# findutils, diffutils, tar, gzip, mawk, bash (Debian's packages, as on a Linux CI runner).
#
# usage: rootfs/build.sh OUT_DIR GUEST_BIN_DIR [amd64|arm64]
#   the image's architecture, by Debian's name: amd64 (the default) or arm64.
#   GUEST_BIN_DIR holds nodeos-init for that architecture, built with
#     RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile release-guest -p nodeos-guest
#   or, when it holds none and the architecture is not this host's, gets it from guest/build.sh
#   (cross-built; CARGO_TARGET_DIR passes through).
#   writes OUT_DIR/rootfs.img; the last line of stdout is "image size: N bytes (X MB)".
#
# environment:
#   DOWNLOAD_DIR=dir   cache for downloaded tarballs and .debs (default: a temporary dir)
#   SQUASHFS_COMP, SQUASHFS_COMP_OPTS, SQUASHFS_BLOCK   override the compression in rootfs/versions
#   KEEP_WORK=1        keep the staging tree (printed on stderr)
#
# Pinned versions and integrity hashes: rootfs/versions. The image is reproducible: same
# inputs, same bytes (fixed timestamps, all files root-owned except /home/node, sorted by mksquashfs).
set -euo pipefail
umask 022

die() { echo "rootfs/build.sh: error: $*" >&2; exit 1; }
phase() { echo "==> $*"; }
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# ensure_tools, debs_init, deb_file
# shellcheck source=debs.sh
source "$SCRIPT_DIR/debs.sh"

[[ $# -eq 2 || $# -eq 3 ]] || die "usage: rootfs/build.sh OUT_DIR GUEST_BIN_DIR [amd64|arm64]"
DEB_ARCH=${3:-amd64}
# Per architecture: the GNU triplet of Debian's library folders, the dynamic loader (and the
# folder of its well-known path), what `file` says of the guest binary.
case $DEB_ARCH in
    amd64) TRIPLET=x86_64-linux-gnu LOADER=ld-linux-x86-64.so.2 LOADER_DIR=lib64 ELF_ARCH=x86-64 ;;
    arm64) TRIPLET=aarch64-linux-gnu LOADER=ld-linux-aarch64.so.1 LOADER_DIR=lib ELF_ARCH=aarch64 ;;
    *) die "unknown architecture $DEB_ARCH: amd64 or arm64" ;;
esac
# Binutils for the image's architecture: the host's own, or Debian's cross ones.
if [[ $(uname -m) == "${TRIPLET%%-*}" ]]; then TOOLS=; else TOOLS=$TRIPLET-; fi
# Root is needed for the owners in the image (mksquashfs's -all-root would override the
# pseudo definition that gives /home/node to uid 1000) and for installing missing tools.
[[ $(id -u) -eq 0 ]] || die "run as root (file ownership in the image)"
REPO=$(dirname "$SCRIPT_DIR")
# The caller's SQUASHFS_* win over rootfs/versions (for measuring other compressions).
env_comp=${SQUASHFS_COMP-} env_comp_opts=${SQUASHFS_COMP_OPTS-} env_block=${SQUASHFS_BLOCK-}
# shellcheck source=versions
source "$SCRIPT_DIR/versions"
if [[ -n $env_comp ]]; then SQUASHFS_COMP=$env_comp SQUASHFS_COMP_OPTS=$env_comp_opts; fi
SQUASHFS_BLOCK=${env_block:-$SQUASHFS_BLOCK}

mkdir -p "$1" || die "cannot create OUT_DIR $1"
OUT_DIR=$(cd "$1" && pwd)
GUEST_BIN_DIR=$(cd "$2" 2>/dev/null && pwd) || die "GUEST_BIN_DIR $2 does not exist"
INIT_BIN=$GUEST_BIN_DIR/nodeos-init
if [[ ! -e $INIT_BIN && $DEB_ARCH != "$(dpkg --print-architecture)" ]]; then
    bash "$REPO/guest/build.sh" "${ELF_ARCH/x86-64/x86_64}" "$GUEST_BIN_DIR" || die "guest/build.sh failed"
fi
[[ -x $INIT_BIN ]] || die "$INIT_BIN not found: build it first (see the usage at the top of this script)"
if file "$INIT_BIN" 2>/dev/null | grep -q "dynamically linked"; then
    die "$INIT_BIN is dynamically linked: build it with RUSTFLAGS=\"-C target-feature=+crt-static\""
fi
file "$INIT_BIN" | grep -q "$ELF_ARCH" || die "$INIT_BIN is not an $DEB_ARCH program: $(file -b "$INIT_BIN")"
JS_DIR=$REPO/guest/js
ETC_DIR=$SCRIPT_DIR/etc

# ---- build dependencies ---------------------------------------------------------------
phase "checking build dependencies"
ensure_tools mksquashfs:squashfs-tools curl:curl openssl:openssl dpkg-deb:dpkg \
    "${TOOLS}strip:binutils${TOOLS:+-${TRIPLET//_/-}}" tar:tar gzip:gzip file:file

# ---- scratch and download dirs -----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodeos-rootfs.XXXXXX")
cleanup() {
    if [[ ${KEEP_WORK:-0} == 1 ]]; then echo "rootfs/build.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
DOWNLOAD_DIR=${DOWNLOAD_DIR:-$WORK/downloads}
mkdir -p "$DOWNLOAD_DIR" || die "cannot create DOWNLOAD_DIR $DOWNLOAD_DIR"
DOWNLOAD_DIR=$(cd "$DOWNLOAD_DIR" && pwd)

# sri_of FILE -> "sha512-<base64>", the npm registry's dist.integrity format.
sri_of() { echo "sha512-$(openssl dgst -sha512 -binary "$1" | base64 -w0)"; }

# fetch_npm NAME VERSION INTEGRITY -> path of the verified tarball in DOWNLOAD_DIR.
fetch_npm() {
    local name=$1 version=$2 integrity=$3
    local file=$DOWNLOAD_DIR/$name-$version.tgz
    if [[ -f $file && $(sri_of "$file") == "$integrity" ]]; then
        echo "$file"; return
    fi
    local url=https://registry.npmjs.org/$name/-/$name-$version.tgz
    phase "downloading $url" >&2
    curl -fsSL --retry 3 -o "$file.part" "$url" || die "download of $url failed"
    local got; got=$(sri_of "$file.part")
    [[ $got == "$integrity" ]] || { rm -f "$file.part"; die "$name@$version: integrity mismatch: got $got, want $integrity"; }
    mv "$file.part" "$file"
    echo "$file"
}

node_package=NODE_PACKAGE_$DEB_ARCH node_integrity=NODE_INTEGRITY_$DEB_ARCH
NODE_TGZ=$(fetch_npm "${!node_package}" "$NODE_VERSION" "${!node_integrity}")
NPM_TGZ=$(fetch_npm npm "$NPM_VERSION" "$NPM_INTEGRITY")

debs_init
DEBS=() COMMAND_DEBS=()
for spec in $DEBIAN_PACKAGES; do DEBS+=("$(deb_file "$spec")"); done
for spec in $DEBIAN_COMMAND_PACKAGES; do COMMAND_DEBS+=("$(deb_file "$spec")"); done

# ---- staging tree ------------------------------------------------------------------------
ROOT=$WORK/root
mkdir -p "$ROOT"
phase "staging the image in $ROOT"
install -d -m 0755 "$ROOT"/{proc,sys,dev,run,etc,home,sbin,usr/bin,usr/local/bin,usr/lib/nodeos,$LOADER_DIR}
ln -s usr/bin "$ROOT/bin" # merged /usr, as Debian 12 has it: /bin/sh is /usr/bin/sh
install -d -m 1777 "$ROOT/tmp"
install -d -m 0755 "$ROOT/home/node"

# Node.js, stripped (the published binary carries ~14 MB of symbols).
tar -xzf "$NODE_TGZ" -C "$WORK" package/bin/node
mv "$WORK/package/bin/node" "$ROOT/usr/bin/node"
rm -rf "$WORK/package"
"${TOOLS}strip" --strip-all "$ROOT/usr/bin/node"
chmod 0755 "$ROOT/usr/bin/node"

# npm, without documentation, Windows launchers, type declarations, and node-gyp's Python gyp
# (building native addons needs Python and a compiler, which the image does not have).
tar -xzf "$NPM_TGZ" -C "$WORK"
mv "$WORK/package" "$ROOT/usr/lib/node_modules/npm" 2>/dev/null || {
    mkdir -p "$ROOT/usr/lib/node_modules" && mv "$WORK/package" "$ROOT/usr/lib/node_modules/npm"
}
NPM_DIR=$ROOT/usr/lib/node_modules/npm
rm -rf "$NPM_DIR"/{docs,man} "$NPM_DIR/node_modules/node-gyp/gyp"
find "$NPM_DIR/bin" \( -name '*.cmd' -o -name '*.ps1' \) -delete
find "$NPM_DIR" -type f \( -iname 'README*' -o -iname 'CHANGELOG*' -o -iname 'HISTORY*' \
    -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete
rm -f "$NPM_DIR/bin/npm" "$NPM_DIR/bin/npx" # bash launchers; there is no bash
# The builtin config (lowest precedence) sends npm to /etc/npmrc, as Debian does.
echo "globalconfig=/etc/npmrc" > "$NPM_DIR/npmrc"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$ROOT/usr/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$ROOT/usr/bin/npx"

# The guest: init (also the spawn shim), and its JavaScript.
install -m 0755 "$INIT_BIN" "$ROOT/sbin/nodeos-init"
ln -s nodeos-init "$ROOT/sbin/init"
install -m 0644 "$JS_DIR"/repl.js "$JS_DIR"/control.js "$JS_DIR"/spawn-preload.js "$ROOT/usr/lib/nodeos/"
# nsh, the Node shell: its modules (not its tests), and /usr/bin/nsh (the script's shebang is
# `#!/usr/bin/env node`).
install -d -m 0755 "$ROOT/usr/lib/nodeos/nsh"
install -m 0644 "$JS_DIR"/nsh/*.js "$ROOT/usr/lib/nodeos/nsh/"
chmod 0755 "$ROOT/usr/lib/nodeos/nsh/nsh.js"
ln -s ../lib/nodeos/nsh/nsh.js "$ROOT/usr/bin/nsh"

# Shared libraries, laid out as Debian does (/lib/x86_64-linux-gnu, /lib64/ld-linux-x86-64.so.2;
# /lib/aarch64-linux-gnu, /lib/ld-linux-aarch64.so.1).
DEB_ROOT=$WORK/debs
mkdir -p "$DEB_ROOT"
for deb in "${DEBS[@]}"; do dpkg-deb -x "$deb" "$DEB_ROOT"; done
# glibc's whole runtime set (what prebuilt native addons link against: rollup's needs librt,
# others libresolv, libutil, libanl, libmvec), its NSS modules, and the C++ runtime.
LIBS=(
    "$LOADER" libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1
    libresolv.so.2 libutil.so.1 libanl.so.1 libBrokenLocale.so.1 libthread_db.so.1
    libnss_files.so.2 libnss_dns.so.2 libnss_compat.so.2
    libgcc_s.so.1 libstdc++.so.6
    libacl.so.1 libattr.so.1 libselinux.so.1 libpcre2-8.so.0 libgmp.so.10 libtinfo.so.6
)
# glibc's vector math library exists for x86-64 only (in Debian 12's glibc).
[[ $DEB_ARCH != amd64 ]] || LIBS+=(libmvec.so.1)
for lib in "${LIBS[@]}"; do
    src=$(find "$DEB_ROOT" -name "$lib" \( -type f -o -type l \) | head -1)
    [[ -n $src ]] || die "$lib is not in ${DEBS[*]}"
    dir=$(dirname "${src#"$DEB_ROOT"}")
    case $dir in "/usr/lib/$TRIPLET" | "/lib/$TRIPLET") ;; *) continue ;; esac
    install -d "$ROOT$dir"
    cp -P "$src" "$ROOT$dir/"
    if [[ -L $src ]]; then # copy what the symlink points to as well
        cp -P "$(dirname "$src")/$(readlink "$src")" "$ROOT$dir/"
    fi
done
ln -s "../lib/$TRIPLET/$LOADER" "$ROOT/$LOADER_DIR/$LOADER"

# /etc
install -m 0644 "$ETC_DIR"/* "$ROOT/etc/"

# The commands: every program of the command packages, from their /bin and /usr/bin, into
# /usr/bin; coreutils' stdbuf preload library beside them.
CMD_ROOT=$WORK/commands
mkdir -p "$CMD_ROOT"
for deb in "${COMMAND_DEBS[@]}"; do dpkg-deb -x "$deb" "$CMD_ROOT"; done
for dir in "$CMD_ROOT/bin" "$CMD_ROOT/usr/bin"; do
    for f in "$dir"/*; do
        [[ -e $ROOT/usr/bin/${f##*/} ]] && die "two command packages have ${f##*/}"
        cp -P "$f" "$ROOT/usr/bin/"
    done
done
install -d "$ROOT/usr/libexec/coreutils"
cp -P "$CMD_ROOT"/usr/libexec/coreutils/* "$ROOT/usr/libexec/coreutils/"
# npm scripts and exec()/execSync() run `/bin/sh -c`: dash, as on Debian and Ubuntu runners
# (Debian's postinst makes these links; dpkg-deb -x runs no scripts).
ln -sf dash "$ROOT/usr/bin/sh"
ln -sf which.debianutils "$ROOT/usr/bin/which"
ln -sf mawk "$ROOT/usr/bin/awk"

# Check: every library that node and each command needs resolves inside the image.
phase "checking the programs' libraries"
for prog in "$ROOT"/usr/bin/* "$ROOT"/usr/libexec/coreutils/*; do
    [[ -f $prog && ! -L $prog ]] || continue
    head -c4 "$prog" | grep -q ELF || continue # shell scripts: gunzip, zgrep, which...
    needed=$(readelf -d "$prog" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    for lib in $needed; do
        [[ -e $ROOT/lib/$TRIPLET/$lib || -e $ROOT/usr/lib/$TRIPLET/$lib ]] \
            || die "${prog#"$ROOT"} needs $lib, which is not in the image"
    done
done

# ---- squashfs ----------------------------------------------------------------------------
# Everything root-owned but the user's home; device nodes for the console before devtmpfs.
chown -R 0:0 "$ROOT"
PSEUDO=$WORK/pseudo
cat > "$PSEUDO" <<'PSEUDO'
home/node m 755 1000 1000
dev/console c 600 0 0 5 1
dev/null c 666 0 0 1 3
PSEUDO
IMG=$OUT_DIR/rootfs.img
# shellcheck disable=SC2086 # SQUASHFS_COMP_OPTS is a list of options
read -r -a comp_opts <<< "${SQUASHFS_COMP_OPTS:-}"
phase "mksquashfs (-comp $SQUASHFS_COMP ${comp_opts[*]} -b $SQUASHFS_BLOCK)"
mksquashfs "$ROOT" "$IMG.part" -noappend -quiet -no-progress \
    -comp "$SQUASHFS_COMP" "${comp_opts[@]}" -b "$SQUASHFS_BLOCK" \
    -pf "$PSEUDO" -no-xattrs \
    -mkfs-time 0 -all-time 0 >/dev/null
mv "$IMG.part" "$IMG"
size=$(stat -c %s "$IMG")
echo "image size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }') MB)"
