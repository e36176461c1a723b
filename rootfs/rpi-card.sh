#!/usr/bin/env bash
# Write a Raspberry Pi (3 B, 3 B+, 4 B) SD card image of NodeOS: the board's boot firmware
# (Debian's raspi-firmware), our arm64 kernel and the boards' device trees on a FAT partition,
# the root image as the second partition (read-only squashfs), and an empty ext4 third
# partition for the writable layer. The REPL runs as PID 1 on the serial console (the mini UART
# on GPIO 14/15).
#
# usage: rootfs/rpi-card.sh OUT_FILE KERNEL_DIR ROOTFS CMDLINE
#   KERNEL_DIR holds the arm64 Image and dtbs/ (kernel/build.sh OUT_DIR arm64); ROOTFS is the
#   arm64 root image; CMDLINE the kernel command line (cmdline.txt). OUT_FILE is replaced once
#   the card is whole.
#
# environment:
#   DOWNLOAD_DIR=dir   cache for downloaded .debs and package lists (default: a temporary dir)
#   CARD_MIB           the image's size in MiB, a power of two (default 512): what is left after
#                      the boot and root partitions is the writable layer's
set -euo pipefail
umask 022

die() { echo "rootfs/rpi-card.sh: error: $*" >&2; exit 1; }
phase() { echo "==> $*"; }
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# ensure_tools, debs_init, deb_file
# shellcheck source=debs.sh
source "$SCRIPT_DIR/debs.sh"

[[ $# -eq 4 ]] || die "usage: rootfs/rpi-card.sh OUT_FILE KERNEL_DIR ROOTFS CMDLINE"
OUT_FILE=$1 KERNEL_DIR=$2 ROOTFS=$3 CMDLINE=$4
[[ -f $KERNEL_DIR/Image && -d $KERNEL_DIR/dtbs ]] || die "$KERNEL_DIR has no Image and dtbs/"
[[ -f $ROOTFS ]] || die "no root image $ROOTFS"
# shellcheck source=versions
source "$SCRIPT_DIR/versions"
CARD_MIB=${CARD_MIB:-512}
BOOT_START_MIB=4
BOOT_MIB=64

phase "checking the tools"
ensure_tools sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools mkfs.ext4:e2fsprogs dpkg-deb:dpkg

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodeos-rpi.XXXXXX")
# The card is written beside OUT_FILE under a temporary name and renamed when whole.
CARD=$OUT_FILE.part
trap 'rm -rf "$WORK" "$CARD"' EXIT
DOWNLOAD_DIR=${DOWNLOAD_DIR:-$WORK/downloads}
mkdir -p "$DOWNLOAD_DIR"
DEB_ARCH=arm64
debs_init
FIRMWARE_DEB=$(deb_file "$RASPI_FIRMWARE")
dpkg-deb -x "$FIRMWARE_DEB" "$WORK/firmware"
FIRMWARE=$WORK/firmware/usr/lib/raspi-firmware

root_mib=$((($(stat -c %s "$ROOTFS") + 1048575) / 1048576))
root_start=$((BOOT_START_MIB + BOOT_MIB))
data_start=$((root_start + root_mib))
data_mib=$((CARD_MIB - data_start))
((CARD_MIB & (CARD_MIB - 1))) && die "CARD_MIB=$CARD_MIB is not a power of two"
((data_mib >= 64)) || die "CARD_MIB=$CARD_MIB leaves ${data_mib} MiB for the writable layer; give more"

phase "the boot partition: firmware, kernel, device trees (FAT32, $BOOT_MIB MiB)"
BOOT=$WORK/boot
mkdir -p "$BOOT"
# Pi 3: bootcode.bin, start.elf, fixup.dat; Pi 4: start4.elf, fixup4.dat (its boot ROM).
for f in bootcode.bin start.elf fixup.dat start4.elf fixup4.dat; do
    cp "$FIRMWARE/$f" "$BOOT/" || die "raspi-firmware has no $f"
done
cp "$WORK/firmware/usr/share/doc/raspi-firmware/copyright" "$BOOT/LICENCE.raspi-firmware"
cp "$KERNEL_DIR/Image" "$BOOT/Image"
cp "$KERNEL_DIR"/dtbs/*.dtb "$BOOT/"
cat >"$BOOT/config.txt" <<'CONFIG'
# NodeOS: a 64-bit kernel (Image) with the mainline device trees; the mini UART at a fixed
# clock for the serial console (GPIO 14/15, 115200 baud).
arm_64bit=1
kernel=Image
enable_uart=1
[pi3]
device_tree=bcm2837-rpi-3-b.dtb
[pi3+]
device_tree=bcm2837-rpi-3-b-plus.dtb
[pi4]
device_tree=bcm2711-rpi-4-b.dtb
[all]
CONFIG
echo "$CMDLINE" >"$BOOT/cmdline.txt"
mkfs.vfat -F 32 -n NODEOS-BOOT -C "$WORK/boot.img" $((BOOT_MIB * 1024)) >/dev/null
mcopy -i "$WORK/boot.img" -s "$BOOT"/* ::/

phase "the writable layer's partition (ext4, $data_mib MiB)"
mkfs.ext4 -q -L nodeos-data "$WORK/data.img" "${data_mib}M" >/dev/null

phase "the card: $CARD_MIB MiB, MBR with boot, root ($root_mib MiB) and data partitions"
rm -f "$CARD"
truncate -s "${CARD_MIB}M" "$CARD"
sfdisk --quiet "$CARD" <<TABLE
label: dos
start=${BOOT_START_MIB}MiB, size=${BOOT_MIB}MiB, type=c, bootable
start=${root_start}MiB, size=${root_mib}MiB, type=83
start=${data_start}MiB, type=83
TABLE
dd if="$WORK/boot.img" of="$CARD" bs=1M seek="$BOOT_START_MIB" conv=notrunc,sparse status=none
dd if="$ROOTFS" of="$CARD" bs=1M seek="$root_start" conv=notrunc,sparse status=none
dd if="$WORK/data.img" of="$CARD" bs=1M seek="$data_start" conv=notrunc,sparse status=none
mv "$CARD" "$OUT_FILE"
echo "card: $OUT_FILE ($CARD_MIB MiB)"
