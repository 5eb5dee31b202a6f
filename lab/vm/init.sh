#!/bin/sh
# PID 1 of the lab's guest image (built by lab/vm/image.ts, booted by
# lab/vm/qemu.ts). Mounts the kernel filesystems, loads the virtio modules,
# configures the NIC from the kernel command line, then serves commands on
# the serial console (ttyS0) for the host.
#
# Kernel command line (all optional):
#   nvg.ip=10.0.1.201/24  nvg.gw=10.0.1.1  nvg.mac=52:54:00:00:00:01
#   nvg.mtu=1458  nvg.name=vm1
# nvg.mac picks the NIC by its address (QEMU's -device ...,mac=); without it
# the NIC is eth0.
#
# Command protocol (one line each way; the host writes, the guest answers):
#   host:  NVGCMD <id> <timeout s> <script, base64>\n   (sent again, same id, until "begin" is seen)
#   guest: @@nvg begin <id>\n<stdout+stderr of `sh script`>\n@@nvg end <id> <status>\n
# (the newline before "@@nvg end" is the channel's, not the output's). The
# script runs with stdin from /dev/null and is killed (status 137) after its
# timeout; processes it starts in the background live on (send their output
# to a file: the console is the channel).
# "@@nvg ready <uptime>" is printed once, when the guest starts serving.

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Debian's kernels do not mount devtmpfs by themselves (DEVTMPFS_MOUNT is off).
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
# Kernel messages would interleave with command output on the console.
dmesg -n 1

# In dependency order (the image builder wrote the list).
while read -r m; do
  insmod "/lib/modules/$m.ko" || echo "nvg: insmod $m failed" >/dev/console
done </lib/modules/order

ip=; gw=; mac=; mtu=; name=
for w in $(cat /proc/cmdline); do
  case "$w" in
    nvg.ip=*) ip=${w#nvg.ip=} ;;
    nvg.gw=*) gw=${w#nvg.gw=} ;;
    nvg.mac=*) mac=${w#nvg.mac=} ;;
    nvg.mtu=*) mtu=${w#nvg.mtu=} ;;
    nvg.name=*) name=${w#nvg.name=} ;;
  esac
done

[ -n "$name" ] && hostname "$name"
# Quiet links, as in the lab's namespaces: no IPv6 (no DAD, RS, MLD).
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
ip link set lo up

nic=eth0
if [ -n "$mac" ]; then
  nic=
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address")" = "$mac" ] && nic=${d##*/}
  done
  [ -n "$nic" ] || echo "nvg: no NIC with MAC $mac" >/dev/console
fi
if [ -n "$nic" ] && [ -e "/sys/class/net/$nic" ]; then
  [ -n "$mtu" ] && ip link set "$nic" mtu "$mtu"
  ip link set "$nic" up
  [ -n "$ip" ] && ip addr add "$ip" dev "$nic"
  [ -n "$gw" ] && ip route add default via "$gw" dev "$nic"
fi

# The command channel. Raw mode: no echo of the host's lines, no
# line-length limit, no \n -> \r\n on output.
exec </dev/ttyS0 >/dev/ttyS0 2>&1
stty raw -echo
cd /
echo "@@nvg ready $(cut -d' ' -f1 /proc/uptime)"
last=
while :; do
  read -r tag id tmo b64 || { sleep 1; continue; }
  [ "$tag" = NVGCMD ] || { echo "@@nvg ignored a line starting ${tag:-(empty)}"; continue; }
  # The host sends a line again when no "begin" came back in time: run it once.
  [ "$id" = "$last" ] && continue
  last=$id
  echo "@@nvg begin $id"
  if echo "$b64" | base64 -d >/tmp/.nvg-cmd 2>/dev/null; then
    timeout -s KILL "$tmo" sh /tmp/.nvg-cmd </dev/null
    rc=$?
  else
    rc=126
  fi
  printf '\n@@nvg end %s %s\n' "$id" "$rc"
done
