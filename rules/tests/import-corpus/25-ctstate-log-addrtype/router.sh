#!/bin/bash
wanif=enp1s0
lanip1=192.168.10.200
iptables -t nat -A PREROUTING -p tcp --dport 80 -j LOG --log-prefix "DNAT_http_80: "
iptables -t nat -A PREROUTING -i $wanif -p tcp -m conntrack --ctstate NEW -m addrtype --dst-type LOCAL --dport 80 -j DNAT --to-destination $lanip1
iptables -t nat -A PREROUTING -i $wanif -p tcp -m state --state NEW --dport 10022 -j DNAT --to-destination $lanip1:22
