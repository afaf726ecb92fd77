iptables -t nat -A PREROUTING -i eth0 -s 10.8.0.0/24 -p tcp --dport 443 -j DNAT --to-destination 192.168.2.10
iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 443 -j DNAT --to-destination 192.168.2.11
