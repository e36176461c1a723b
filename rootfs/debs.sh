# Debian packages for the root image and card builders: sourced by rootfs/build.sh and
# rootfs/rpi-card.sh, which define `die` and `phase`. Defines ensure_tools, debs_init and
# deb_file.

# ensure_tools COMMAND:PACKAGE... -> installs the packages of the commands not on PATH, as
# root (otherwise says the command to run).
ensure_tools() {
    local tool missing=()
    for tool in "$@"; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) -eq 0 ]] || die "missing tools; run: sudo apt-get install -y ${missing[*]}"
    phase "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; } \
        || die "apt-get install -y ${missing[*]} failed"
}

# debs_init -> readies deb_file for the packages of DEB_ARCH (Debian's name), kept in
# DOWNLOAD_DIR.
debs_init() {
    DEB_DIR=$DOWNLOAD_DIR/debs
    mkdir -p "$DEB_DIR"
    # Another architecture's packages come through package lists of its own, kept in
    # DOWNLOAD_DIR, from Debian 12's main and non-free-firmware (the Raspberry Pi's boot
    # firmware) components: the host's apt configuration and dpkg's architectures stay as they
    # are.
    APT=(apt-get)
    if [[ $DEB_ARCH != "$(dpkg --print-architecture)" ]]; then
        APT_STATE=$DOWNLOAD_DIR/apt-$DEB_ARCH
        mkdir -p "$APT_STATE/lists/partial" "$APT_STATE/cache/archives/partial" "$APT_STATE/sources.list.d"
        touch "$APT_STATE/status"
        cat >"$APT_STATE/sources.list" <<SOURCES
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main non-free-firmware
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main non-free-firmware
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main non-free-firmware
SOURCES
        APT+=(-o "APT::Architecture=$DEB_ARCH" -o "APT::Architectures::=$DEB_ARCH"
            -o "Dir::State::Lists=$APT_STATE/lists" -o "Dir::Cache=$APT_STATE/cache"
            -o "Dir::State::status=$APT_STATE/status"
            -o "Dir::Etc::SourceList=$APT_STATE/sources.list"
            -o "Dir::Etc::SourceParts=$APT_STATE/sources.list.d")
        if ! compgen -G "$APT_STATE/lists/*non-free-firmware*Packages*" >/dev/null; then
            phase "downloading Debian's $DEB_ARCH package lists"
            "${APT[@]}" update >/dev/null || die "apt-get update for $DEB_ARCH failed"
        fi
    fi
}

# deb_file NAME=VERSION -> path of the package's .deb in DEB_DIR, downloaded if missing: the
# pinned version if the archive still has it, else the current one.
deb_file() {
    local spec=$1 name=${1%%=*} version=${1#*=} deb
    # Architecture-independent packages are "_all".
    deb=$(ls "$DEB_DIR/${name}_${version//:/%3a}_"{"$DEB_ARCH",all}.deb 2>/dev/null || true)
    if [[ -z $deb ]]; then
        phase "downloading Debian package $spec ($DEB_ARCH)" >&2
        if ! (cd "$DEB_DIR" && "${APT[@]}" download "$spec") >/dev/null 2>&1; then
            # Maybe only the package lists are stale.
            "${APT[@]}" update >/dev/null 2>&1 || true
            if ! (cd "$DEB_DIR" && "${APT[@]}" download "$spec") >/dev/null 2>&1; then
                echo "rootfs: warning: $spec is not in the archive any more; taking the current $name" >&2
                (cd "$DEB_DIR" && "${APT[@]}" download "$name") >&2 || die "apt-get download $name failed"
            fi
        fi
        deb=$(ls -t "$DEB_DIR/${name}_"*_{"$DEB_ARCH",all}.deb 2>/dev/null | head -1)
    fi
    echo "$deb"
}
