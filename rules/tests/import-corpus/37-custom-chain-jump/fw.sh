iptables -t nat -N PORTFWD
iptables -t nat -A PREROUTING -i ppp0 -j PORTFWD
iptables -t nat -A PORTFWD -p tcp --dport 25 -j DNAT --to-destination 10.1.1.51
iptables -t nat -A PORTFWD -p udp --dport 53 -j DNAT --to-destination 10.1.1.51
iptables -t nat -A PORTFWD -p tcp --dport 2300:2400 -j DNAT --to-destination 10.1.1.50
