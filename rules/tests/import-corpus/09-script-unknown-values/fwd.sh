#!/bin/sh
LOCAIF=$1
WANIP=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
iptables -t nat -A PREROUTING -p tcp -i $LOCAIF --dport 7522 -j DNAT --to-destination 192.168.8.20:7522
iptables -t nat -A PREROUTING -p tcp -d $WANIP --dport 8889 -j DNAT --to-destination 192.168.8.20:8889
for p in 27015 27016; do
    iptables -t nat -A PREROUTING -i eth0 -p udp --dport $p -j DNAT --to-destination 192.168.8.21
done
iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 2022 -j DNAT --to-destination 192.168.8.22:22
