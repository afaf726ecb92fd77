iptables -t nat -A PREROUTING -p tcp -d 192.168.0.218 --dport 80 -j DNAT --to-destination 192.168.10.200
iptables -t nat -A PREROUTING -p tcp --dport 3389 -j DNAT --to-destination 192.168.10.201
