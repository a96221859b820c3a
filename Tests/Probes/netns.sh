#!/bin/sh
# Three hosts on one virtual switch: netns.sh up|down PREFIX SUBNET (e.g. sg1234 10.77.3)
# makes PREFIX-laptop (SUBNET.1), PREFIX-vps (SUBNET.2), PREFIX-mini (SUBNET.3), joined by a bridge in PREFIX-sw.
set -e
cmd=$1 p=$2 net=$3
if [ "$cmd" = down ]; then
  for h in laptop vps mini sw; do ip netns del "$p-$h" 2>/dev/null || true; done
  exit 0
fi
ip netns add "$p-sw"
ip -n "$p-sw" link add br0 type bridge
ip -n "$p-sw" link set br0 up
i=1
for h in laptop vps mini; do
  ip netns add "$p-$h"
  ip link add "$p-$i" type veth peer name eth0 netns "$p-$h"
  ip link set "$p-$i" netns "$p-sw"
  ip -n "$p-sw" link set "$p-$i" master br0 up
  ip -n "$p-$h" addr add "$net.$i/24" dev eth0
  ip -n "$p-$h" link set eth0 up
  ip -n "$p-$h" link set lo up
  i=$((i + 1))
done
