iptables -t nat -A PREROUTING -i vmbr0 -p tcp --dport 2222 -j DNAT --to-destination 192.168.100.81:22
iptables -t nat -A POSTROUTING -o vmbr1 -j MASQUERADE
