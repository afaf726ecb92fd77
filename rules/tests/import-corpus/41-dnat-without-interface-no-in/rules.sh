iptables -t nat -A PREROUTING -p tcp --dport 3389 -j DNAT --to-destination 192.168.10.201
iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 3390 -j DNAT --to-destination 192.168.10.202:3389
