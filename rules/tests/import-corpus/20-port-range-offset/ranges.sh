iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 8000:8010 -j DNAT --to-destination 10.1.1.5:9000-9010/8000
iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 7000:7010 -j DNAT --to-destination 10.1.1.5:9000-9010
