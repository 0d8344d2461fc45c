#!/bin/busybox sh
# shellcheck shell=dash
# /init of the vserver test guest (copied into the initramfs by test/guest/build.sh).
#
# Serial protocol on ttyS0 (COM1), one line each, printed once per boot after the devices settle:
#   VSERVER-DISKS <names from /sys/block matching sd* sr* fd* vd*, space-separated; none: no names>
#   VSERVER-NICS <name=mac/driver for every interface except lo, space-separated>
#   VSERVER-GUEST-READY
# Later, on an ACPI power-button press (QMP system_powerdown): VSERVER-POWER-BUTTON, then poweroff -f.
# Networking: after the marker every ethernet interface is brought up and gets its own busybox
# udhcpc in the background (retrying forever; the marker never waits for DHCP). Its script
# (/bin/dhcp-event) sets the address, the default route and resolv.conf, and prints:
#   VSERVER-LEASE <ifname> <address> <mac>   on every lease obtained or renewed (address without /prefix)
#   VSERVER-LEASE-LOST <ifname>               when a lease's address goes (lease lost or released)
# After the marker an interactive busybox shell (prompt "guest# ", job control) runs on ttyS0 and
# is respawned whenever it exits. /bin/ticker prints "tick N" once a second.
# /bin/records DEVICE [FIRST] writes numbered, checksummed 4 KiB records to DEVICE (record n at
# byte (n-1)*4096: "VSREC <n as 10 digits> <sha256 of the 4014 bytes that follow>\n", then
# "<n>." repeated), one at a time with O_DIRECT and an fsync, printing "VSREC n" on ttyS0 once
# record n is durable; test/helpers/records.ts reads them back.

/bin/busybox --install -s /bin
export PATH=/bin HOME=/ TERM=vt100 PS1='guest# '

mkdir -p /proc /sys /dev /tmp /etc/acpi/PWRF /var/run /var/log
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts

# Everything init prints goes to the first serial port.
tty=/dev/ttyS0
[ -c "$tty" ] || tty=/dev/console
exec </dev/null >"$tty" 2>&1

# Modules, in dependency order ("file.ko [params]" per line); failures (absent hardware,
# duplicates) are expected and ignored.
while read -r ko params; do
  # shellcheck disable=SC2086 # params are word-split on purpose
  insmod "/lib/modules/$ko" $params 2>/dev/null
done </lib/modules/load-order

# Devices appear asynchronously: wait (at most ~5 s) until /sys/block and /sys/class/net have
# not changed for 0.6 s.
snapshot() { echo /sys/block/* /sys/class/net/*; }
prev=$(snapshot)
stable=0
tries=0
while [ "$stable" -lt 6 ] && [ "$tries" -lt 50 ]; do
  sleep 0.1
  cur=$(snapshot)
  if [ "$cur" = "$prev" ]; then
    stable=$((stable + 1))
  else
    stable=0
    prev=$cur
  fi
  tries=$((tries + 1))
done

disks=""
for d in /sys/block/sd* /sys/block/sr* /sys/block/fd* /sys/block/vd*; do
  [ -e "$d" ] && disks="$disks ${d##*/}"
done
nics=""
for n in /sys/class/net/*; do
  name=${n##*/}
  [ "$name" = lo ] && continue
  [ -e "$n" ] || continue
  mac=$(cat "$n/address" 2>/dev/null)
  driver=-
  [ -e "$n/device/driver" ] && driver=$(basename "$(readlink "$n/device/driver")")
  nics="$nics $name=$mac/$driver"
done

# The power button: busybox acpid reads /dev/input/event* (button + evdev modules) and runs
# /etc/acpi/PWRF/00000080 for KEY_POWER.
cat >/etc/acpi/PWRF/00000080 <<'SCRIPT'
#!/bin/sh
echo VSERVER-POWER-BUTTON >/dev/ttyS0
sync
poweroff -f
SCRIPT
chmod 755 /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /tmp/acpid.log -p /var/run/acpid.pid

cat >/bin/ticker <<'SCRIPT'
#!/bin/sh
# Prints "tick N" (N = 1, 2, 3, ...) once a second, forever.
n=0
while :; do
  n=$((n + 1))
  echo "tick $n"
  sleep 1
done
SCRIPT
chmod 755 /bin/ticker

cat >/bin/records <<'SCRIPT'
#!/bin/sh
# /bin/records DEVICE [FIRST]: see /init. Stops at the first failed write (a full device).
dev=$1
n=${2:-1}
while :; do
  awk -v n="$n" 'BEGIN { s = ""; while (length(s) < 4014) s = s n "."; printf "%s", substr(s, 1, 4014) }' >/tmp/records.body
  sum=$(sha256sum /tmp/records.body)
  { printf 'VSREC %010d %s\n' "$n" "${sum%% *}"; cat /tmp/records.body; } >/tmp/records.rec
  dd if=/tmp/records.rec of="$dev" bs=4096 seek=$((n - 1)) count=1 oflag=direct conv=notrunc,fsync status=none || exit 1
  echo "VSREC $n" >/dev/ttyS0
  n=$((n + 1))
done
SCRIPT
chmod 755 /bin/records

# The DHCP client's event script (udhcpc passes the event as $1 and the lease in the environment).
cat >/bin/dhcp-event <<SCRIPT
#!/bin/sh
out=$tty
SCRIPT
cat >>/bin/dhcp-event <<'SCRIPT'
mac=$(cat "/sys/class/net/$interface/address" 2>/dev/null)
case "$1" in
  deconfig)
    # Said only when an address goes, so that a guest without DHCP prints nothing after its marker.
    if ip -4 addr show dev "$interface" | grep -q inet; then
      ip -4 addr flush dev "$interface"
      echo "VSERVER-LEASE-LOST $interface" >"$out"
    fi
    ip link set "$interface" up
    ;;
  bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    [ -n "$dns" ] && for s in $dns; do echo "nameserver $s"; done >/etc/resolv.conf
    echo "VSERVER-LEASE $interface $ip $mac" >"$out"
    ;;
esac
exit 0
SCRIPT
chmod 755 /bin/dhcp-event

echo "VSERVER-DISKS${disks}"
echo "VSERVER-NICS${nics}"
echo "VSERVER-GUEST-READY"

# DHCP on every ethernet interface, in the background: -b daemonizes if no lease comes at once,
# and without -n udhcpc retries forever (3 discovers 2 s apart, then a 3 s pause).
ip link set lo up
for n in /sys/class/net/*; do
  name=${n##*/}
  [ "$(cat "$n/type" 2>/dev/null)" = 1 ] || continue # ARPHRD_ETHER only (not lo)
  ip link set "$name" up
  udhcpc -i "$name" -b -t 3 -T 2 -A 3 -s /bin/dhcp-event -x "hostname:guest-$(tr -d : <"$n/address")" >/dev/null 2>&1 &
done

# The interactive shell: each run is a new session with ttyS0 as its controlling terminal
# (setsid -c takes stdin as the tty), so job control works; respawned whenever it exits.
while :; do
  # shellcheck disable=SC2094 # the terminal is read and written on purpose
  setsid -c sh -i <"$tty" >"$tty" 2>&1
  sleep 0.5
done
