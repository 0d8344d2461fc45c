#!/usr/bin/env bash
# Installs what vserver needs and is missing, then returns; safe to run any number of times.
#   scripts/setup.sh start   what the service needs: npm packages, QEMU with SeaBIOS, iproute2, dnsmasq-base
#                            and nftables (virtual networks), and (as root) the unprivileged user
#                            vserver-qemu that QEMU runs as
#   scripts/setup.sh test    that, plus the tools the tests drive (qemu-img/io/nbd, libnbd's tools,
#                            nbdkit, FUSE, sfdisk, mkfs.ext4, losetup, libvhdi's vhdiinfo, busybox's udhcpc) and the test guest (test/guest/build.sh,
#                            with kmod, cpio, dosfstools, mtools and syslinux)
#                            and Debian's chromium for the website's browser tests
#   scripts/setup.sh bench   that, plus fio (the benchmarks' NBD client)
# It says what it installs, and what to do when it cannot (not root, no apt, no network).
set -euo pipefail
mode=${1:-test}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

say() { echo "setup: $*" >&2; }
die() { echo "setup: $*" >&2; exit 1; }

# --- Node.js -------------------------------------------------------------------------------
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 20 ] || die "vserver needs Node.js 20 or later (found: $(node --version 2>/dev/null || echo none)). On Debian: apt-get install nodejs npm, or use NodeSource's Node 20."

# --- Debian packages -----------------------------------------------------------------------
# command (or absolute file) -> package that provides it
declare -A wanted=([qemu-system-x86_64]=qemu-system-x86 [/usr/share/seabios/bios.bin]=seabios
  # npm ci builds the native addons of better-sqlite3 and node-pty with node-gyp
  [make]=make [g++]=g++ [python3]=python3
  # the host parts of virtual networks (server/network/): bridges and TAPs, DHCP servers, NAT rules.
  # By absolute path: a user's PATH may lack the sbin folders they live in.
  [/usr/bin/ip]=iproute2 [/usr/sbin/dnsmasq]=dnsmasq-base [/usr/sbin/nft]=nftables)
case "$mode" in
  start) ;;
  test|bench)
    wanted+=([qemu-img]=qemu-utils [qemu-io]=qemu-utils [qemu-nbd]=qemu-utils [nbdinfo]=libnbd-bin [nbdfuse]=libnbd-bin
      [fusermount3]=fuse3 [sfdisk]=fdisk [mkfs.ext4]=e2fsprogs [losetup]=mount
      # libvhdi's reader, a third reading of our disks' size
      [vhdiinfo]=libvhdi-utils
      # a FUSE file whose reads are slow (nbdkit's delay filter), for the file time limit's test
      [nbdkit]=nbdkit
      # what test/guest/build.sh builds the test guest with
      [depmod]=kmod [cpio]=cpio [mkfs.fat]=dosfstools [mcopy]=mtools [syslinux]=syslinux
      [/usr/lib/syslinux/mbr/mbr.bin]=syslinux-common
      # the network tests' guests ask for their addresses with busybox's udhcpc, and ping
      [busybox]=busybox-static
      # the website's tests drive Debian's chromium with playwright-core (no browser download)
      [chromium]=chromium
      # the cluster tests start their own etcd members (test/helpers/etcd.ts); never a system service
      [/usr/bin/etcd]=etcd-server [etcdctl]=etcd-client)
    [ "$mode" = bench ] && wanted[fio]=fio
    ;;
  *) die "unknown mode '$mode' (use start, test or bench)" ;;
esac

missing=()
for cmd in "${!wanted[@]}"; do
  case "$cmd" in
    /*) [ -e "$cmd" ] || missing+=("${wanted[$cmd]}") ;;
    *) command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}") ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing Debian packages: $packages; this machine has no apt-get. Install the equivalents with your package manager and run again."
  fi
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: $packages; installing them needs root. Run: sudo apt-get install -y $packages  (or run this command as root)"
  fi
  say "installing Debian packages: $packages"
  export DEBIAN_FRONTEND=noninteractive
  # etcd-server's maintainer script would start a system etcd on the default ports: a policy-rc.d
  # that says no (101) stops every service start during this install; one already there is kept.
  policy_made=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_made=1
  fi
  trap '[ -n "$policy_made" ] && rm -f /usr/sbin/policy-rc.d' EXIT
  # shellcheck disable=SC2086
  if ! apt-get install -y -q --no-install-recommends $packages >/tmp/vserver-apt.log 2>&1; then
    say "package lists may be stale; running apt-get update"
    apt-get update -q >>/tmp/vserver-apt.log 2>&1 || die "apt-get update failed (no network or no mirror?); see /tmp/vserver-apt.log"
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $packages >>/tmp/vserver-apt.log 2>&1 \
      || die "apt-get install $packages failed; see /tmp/vserver-apt.log"
  fi
  [ -n "$policy_made" ] && rm -f /usr/sbin/policy-rc.d
  policy_made=
  say "installed $packages"
fi

# --- npm packages --------------------------------------------------------------------------
# Reinstall when node_modules is missing or older than the lock file. Not for package.json alone:
# npm ci installs what the lock file says, and a change to the scripts needs no reinstall.
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  say "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2 || die "npm ci failed; check that the npm registry is reachable, then run again"
  touch "$stamp"
fi

# --- the account QEMU runs as --------------------------------------------------------------
# When vserver runs as root, each VM's QEMU drops to this user (vmm/worker/user.ts).
if [ "$(id -u)" -eq 0 ] && ! id -u vserver-qemu >/dev/null 2>&1; then
  say "creating the system user vserver-qemu (QEMU runs as it)"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vserver-qemu \
    || die "could not create the user vserver-qemu; create it by hand (useradd --system vserver-qemu) or QEMU will run as nobody"
fi

# --- the test guest ------------------------------------------------------------------------
if [ "$mode" != start ]; then
  bash test/guest/build.sh >/dev/null || die "building the test guest failed (see the messages above)"
fi
