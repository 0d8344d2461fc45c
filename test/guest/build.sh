#!/usr/bin/env bash
# Builds the tiny Linux test guest the QEMU tests boot: the Debian kernel, a busybox-static
# initramfs whose /init is test/guest/init.sh, and a bootable dynamic VHD (MBR + one FAT
# partition with SYSLINUX) holding both. Everything comes from Debian packages (apt-get download
# + dpkg-deb -x) and file-level tools; nothing needs root except an `apt-get update`.
#
# Cache, outside git: ${VSERVER_GUEST_CACHE:-/var/cache/vserver/test-guest} (as non-root without
# the variable: $HOME/.cache/vserver/test-guest):
#   guest.json      entry point: {"kernel","initrd","bootVhd","kernelVersion","append","marker",
#                   "builderHash"} with absolute paths into the current build
#   <key>/          the current build: vmlinuz initrd.gz boot.vhd guest.json modules.txt
#                   key = <kernel ABI>_<kernel package version>_<hash of the builder + busybox version>
#   .apt-resolved   the last apt resolution and a stamp of the apt lists it came from
#   .lock           flock'ed while building
# Builds happen in .build.XXXXXX/ and are renamed into place, so an interrupted build leaves no
# half cache; older builds are deleted. With a valid cache a run only prints the result.
#
# Usage: bash test/guest/build.sh [--force]
# Messages go to stderr; the last stdout line is the path of guest.json.
set -euo pipefail

readonly MARKER='VSERVER-GUEST-READY'
readonly APPEND='console=ttyS0,115200 loglevel=3'
readonly DISK_MIB=64
readonly PART_START=2048 # sectors
readonly MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
# Modules for the initramfs; each is expanded to its dependencies in load order. Class drivers
# first so disks attach as soon as an HBA finds them.
readonly MODULES=(
  scsi_mod sd_mod sr_mod cdrom
  virtio_pci virtio_blk virtio_net virtio_console
  sym53c8xx libata ata_piix floppy
  tulip e1000
  button evdev
  usbcore uhci_hcd usbhid hid_generic
  virtio_scsi
)
# Extra insmod parameters. A module's insmod returns once the bus scans it started are done
# (scan=sync makes that explicit for SCSI). settle=0: no 3 s wait after the sym53c8xx bus reset
# (an emulated bus needs none). virtio_scsi scans all 256 targets, ~6 s under TCG: it is loaded
# last (nothing depends on it) with async_probe, so no insmod waits for that scan; its disks on
# the first few targets appear within the settle wait of /init.
declare -A MODULE_PARAMS=([scsi_mod]='scan=sync' [sym53c8xx]='settle=0' [virtio_scsi]='async_probe')

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly INPUTS=("$here/build.sh" "$here/init.sh")
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf 'test-guest: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

force=0
case "${1:-}" in
  '') ;;
  --force) force=1 ;;
  *) die "usage: bash test/guest/build.sh [--force]" ;;
esac

if [[ -n ${VSERVER_GUEST_CACHE:-} ]]; then
  cache=$VSERVER_GUEST_CACHE
elif [[ $(id -u) -eq 0 ]]; then
  cache=/var/cache/vserver/test-guest
else
  [[ -n ${HOME:-} ]] || die "HOME is not set; set VSERVER_GUEST_CACHE to a writable directory"
  cache=$HOME/.cache/vserver/test-guest
fi
mkdir -p "$cache" || die "cannot create the cache directory $cache (set VSERVER_GUEST_CACHE)"
cache=$(cd "$cache" && pwd -P)

is_root() { [[ $(id -u) -eq 0 ]]; }

# ---------------------------------------------------------------------------------------------
# Which packages: linux-image-amd64's dependency names the kernel package. apt-cache is slow
# (~1.5 s without pkgcache.bin), so the answer is kept in .apt-resolved together with a stamp of
# the package lists and dpkg status it came from.

kpkg='' kpkgver='' bbver=''

apt_stamp() {
  stat -c '%n %s %Y' /var/lib/apt/lists/*_Packages* /var/lib/dpkg/status /etc/apt/preferences* \
    2>/dev/null | sha256sum | cut -c1-32
}

# Sets kpkg, kpkgver, bbver. $1=1 ignores .apt-resolved. Returns 1 if apt cannot tell.
resolve() {
  local fresh=${1:-0} stamp saved depends show
  if ! command -v apt-cache >/dev/null 2>&1; then
    if [[ -f $cache/.apt-resolved ]]; then
      log "warning: apt-cache not found; reusing the last resolution in $cache/.apt-resolved"
      { read -r _ && read -r kpkg && read -r kpkgver && read -r bbver; } <"$cache/.apt-resolved"
      return 0
    fi
    die "apt-cache not found: the test guest is built from Debian packages, run this on a Debian host (or copy a built cache and set VSERVER_GUEST_CACHE)"
  fi
  stamp=$(apt_stamp)
  if [[ $fresh -eq 0 && -f $cache/.apt-resolved ]]; then
    saved=''
    { read -r saved && read -r kpkg && read -r kpkgver && read -r bbver; } <"$cache/.apt-resolved" || true
    [[ $saved == "$stamp" && -n $kpkg && -n $kpkgver && -n $bbver ]] && return 0
  fi
  depends=$(apt-cache depends linux-image-amd64 2>/dev/null) || return 1
  kpkg=$(awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }' <<<"$depends")
  [[ -n $kpkg ]] || return 1
  show=$(apt-cache show --no-all-versions "$kpkg" busybox-static 2>/dev/null) || return 1
  kpkgver=$(awk -v p="$kpkg" '/^Package:/ { cur = $2 } /^Version:/ && cur == p { print $2; exit }' <<<"$show")
  bbver=$(awk '/^Package:/ { cur = $2 } /^Version:/ && cur == "busybox-static" { print $2; exit }' <<<"$show")
  [[ -n $kpkgver && -n $bbver ]] || return 1
  # Best effort: a read-only cache (built by someone else) still works, only slower.
  { printf '%s\n%s\n%s\n%s\n' "$stamp" "$kpkg" "$kpkgver" "$bbver" >"$cache/.apt-resolved.$$" &&
    mv -f "$cache/.apt-resolved.$$" "$cache/.apt-resolved"; } 2>/dev/null || rm -f "$cache/.apt-resolved.$$" 2>/dev/null || true
}

updated=0
apt_update_once() {
  [[ $updated -eq 0 ]] || return 1
  updated=1
  if ! is_root; then
    die "$1; the package lists may be stale or missing: run 'apt-get update' as root, then run this again"
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: the test guest is built from Debian packages"
  log "$1; running apt-get update once and retrying"
  apt-get -q update >&2 || die "apt-get update failed (no access to the Debian mirror?)"
}

resolve_or_update() {
  resolve "${1:-0}" && return 0
  apt_update_once "cannot resolve linux-image-amd64 / busybox-static with apt-cache" || true
  resolve 1 || die "apt-cache cannot resolve linux-image-amd64's kernel package or busybox-static (is this a Debian amd64 host with a bookworm mirror?)"
}

# builderHash in guest.json: sha256 of the builder's files, so tests can tell a stale build.
builder_hash=$(cat "${INPUTS[@]}" | sha256sum | cut -c1-64)
kver='' key=''
compute_key() {
  kver=${kpkg#linux-image-}
  local h
  h=$(printf '%s busybox-static %s\n' "$builder_hash" "$bbver" | sha256sum | cut -c1-12)
  key="${kver}_${kpkgver//[:\/]/_}_$h"
}

# True if the build for $key is complete and guest.json points at it.
cache_valid() {
  local d=$cache/$key
  [[ -f $d/guest.json && -f $d/vmlinuz && -f $d/initrd.gz && -f $d/boot.vhd && -f $cache/guest.json ]] &&
    cmp -s "$d/guest.json" "$cache/guest.json"
}

done_ok() {
  printf '%s\n' "$cache/guest.json"
  exit 0
}

resolve_or_update 0
compute_key
if [[ $force -eq 0 ]] && cache_valid; then
  log "up to date: $cache/$key"
  done_ok
fi

# ---------------------------------------------------------------------------------------------
# Building.

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (install the Debian package $2)"; }
need apt-get apt
need dpkg-deb dpkg
need depmod kmod
need modprobe kmod
need cpio cpio
need gzip gzip
need sfdisk fdisk
need mkfs.fat dosfstools
need mcopy mtools
need syslinux syslinux
need qemu-img qemu-utils
need flock util-linux
need setsid util-linux
[[ -f $MBR_BIN ]] || die "$MBR_BIN not found (install the Debian package syslinux-common)"

exec 9>"$cache/.lock"
if ! flock -n 9; then
  log "waiting for another build in $cache"
  flock 9
fi
# Another process may have finished the same build while this one waited.
if [[ $force -eq 0 ]] && cache_valid; then
  log "up to date: $cache/$key"
  done_ok
fi

# Under the lock no other build runs: leftovers of interrupted builds can go.
for d in "$cache"/.build.*; do
  [[ -d $d ]] && rm -rf "$d"
done

start=$SECONDS
tmp=$(mktemp -d "$cache/.build.XXXXXX")
touch "$tmp/.vserver-test-guest"
# The long steps run in the background, each in its own process group, so a signal is handled
# at once (bash defers traps while a foreground command runs) and the handler can stop the whole
# step (dpkg-deb -x runs tar in a child) before the temp dir goes.
child=''
bg() {
  setsid -w "$@" &
  child=$!
  wait "$child"
  child=''
}
# shellcheck disable=SC2317 # called by traps
cleanup() {
  rm -rf "$tmp" 2>/dev/null || { sleep 0.5 && rm -rf "$tmp"; }
}
# shellcheck disable=SC2317
on_signal() {
  trap - INT TERM
  if [[ -n $child ]]; then
    kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

debs=$tmp/debs
mkdir -p "$debs"
apt_opts=(-q)
# As root, apt drops to the _apt user for downloads, which cannot write into a private temp dir
# (it would warn and download as root anyway).
is_root && apt_opts+=(-o APT::Sandbox::User=root)
download() {
  rm -f "$debs"/*.deb
  bg env -C "$debs" apt-get "${apt_opts[@]}" download "$kpkg=$kpkgver" "busybox-static=$bbver" >&2
}
log "downloading $kpkg $kpkgver and busybox-static $bbver"
if ! download; then
  apt_update_once "apt-get download failed" || die "apt-get download failed again"
  # The mirror may have moved on: follow it.
  resolve_or_update 1
  compute_key
  if [[ $force -eq 0 ]] && cache_valid; then
    log "up to date: $cache/$key"
    done_ok
  fi
  log "downloading $kpkg $kpkgver and busybox-static $bbver"
  download || die "apt-get download of $kpkg=$kpkgver busybox-static=$bbver failed after apt-get update"
fi

log "unpacking"
kdir=$tmp/kernel
bg dpkg-deb -x "$debs/${kpkg}_"*.deb "$kdir"
dpkg-deb -x "$debs"/busybox-static_*.deb "$tmp/busybox"
[[ -f $kdir/boot/vmlinuz-$kver ]] || die "$kpkg has no boot/vmlinuz-$kver"
[[ -d $kdir/lib/modules/$kver ]] || die "$kpkg has no lib/modules/$kver"
[[ -x $tmp/busybox/bin/busybox ]] || die "busybox-static has no bin/busybox"

out=$tmp/out
root=$tmp/root
mkdir -p "$out" "$root"/{bin,dev,proc,sys,tmp,etc,mnt,lib/modules}
touch "$out/.vserver-test-guest"
cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz"
chmod 644 "$out/vmlinuz"

# Modules and their dependencies, in load order, once each.
depmod -b "$kdir" "$kver"
: >"$root/lib/modules/load-order"
declare -A loaded=()
for m in "${MODULES[@]}"; do
  if ! deps=$(modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>/dev/null); then
    log "warning: module $m not found in $kpkg; skipped"
    continue
  fi
  while read -r what path _; do
    [[ $what == insmod ]] || continue # "builtin X": compiled in, nothing to load
    ko=${path##*/}
    [[ -z ${loaded[$ko]:-} ]] || continue
    loaded[$ko]=1
    cp "$path" "$root/lib/modules/$ko"
    name=${ko%.ko}
    params=${MODULE_PARAMS[${name//-/_}]:-}
    printf '%s\n' "$ko${params:+ $params}" >>"$root/lib/modules/load-order"
  done <<<"$deps"
done
cp "$root/lib/modules/load-order" "$out/modules.txt"
log "$(wc -l <"$out/modules.txt") modules"

cp "$tmp/busybox/bin/busybox" "$root/bin/busybox"
cp "$here/init.sh" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -9n >"$out/initrd.gz"
# The unpacked kernel (~390 MB) is no longer needed.
rm -rf "$kdir" "$debs"

log "making boot.vhd"
img=$tmp/boot.img
part_off=$((PART_START * 512))
truncate -s "${DISK_MIB}M" "$img"
printf 'label: dos\nstart=%d, type=e, bootable\n' "$PART_START" | sfdisk --quiet "$img" >&2
mkfs.fat -F 16 -n VSGUEST --offset "$PART_START" "$img" $(((DISK_MIB * 1048576 - part_off) / 1024)) >/dev/null
cat >"$tmp/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 1
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND $APPEND
EOF
MTOOLS_SKIP_CHECK=1 mcopy -i "$img@@$part_off" "$out/vmlinuz" "$out/initrd.gz" "$tmp/syslinux.cfg" ::/
syslinux --offset "$part_off" --install "$img"
dd if="$MBR_BIN" of="$img" bs=440 count=1 conv=notrunc status=none
qemu-img convert -f raw -O vpc -o subformat=dynamic "$img" "$out/boot.vhd"
rm -f "$img"

json_str() {
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}
final=$cache/$key
write_json() {
  printf '{\n  "kernel": %s,\n  "initrd": %s,\n  "bootVhd": %s,\n  "kernelVersion": %s,\n  "append": %s,\n  "marker": %s,\n  "builderHash": %s\n}\n' \
    "$(json_str "$final/vmlinuz")" "$(json_str "$final/initrd.gz")" "$(json_str "$final/boot.vhd")" \
    "$(json_str "$kver")" "$(json_str "$APPEND")" "$(json_str "$MARKER")" "$(json_str "$builder_hash")" >"$1"
}
write_json "$out/guest.json"

# Into place: the build directory by rename (a --force rebuild moves the old one into the temp
# dir, which goes at exit), then guest.json by rename.
if [[ -e $final ]]; then mv -T "$final" "$tmp/replaced"; fi
mv -T "$out" "$final"
cp "$final/guest.json" "$cache/.guest.json.$$"
mv -f "$cache/.guest.json.$$" "$cache/guest.json"
for d in "$cache"/*/; do
  d=${d%/}
  [[ $d != "$final" && -f $d/.vserver-test-guest ]] && rm -rf "$d"
done
log "built $final in $((SECONDS - start)) s ($(du -sh "$final" | cut -f1))"
done_ok
