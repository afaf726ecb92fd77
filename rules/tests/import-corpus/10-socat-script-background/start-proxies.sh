#!/bin/bash
# relay the NAS and the printer to the wireguard peers
nohup socat TCP4-LISTEN:5000,fork,reuseaddr TCP4:192.168.1.20:5000 >/var/log/nas.log 2>&1 &
socat -d -d UDP4-RECVFROM:9100,fork UDP4-SENDTO:192.168.1.30:9100 &
sh -c 'exec socat TCP-LISTEN:8443,fork,reuseaddr TCP:192.168.1.20:443'
wait
