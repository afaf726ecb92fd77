socat TCP6-LISTEN:8080,ipv6only=1,fork TCP6:[fd00::20]:80
socat TCP-LISTEN:8081,fork TCP6:[fd00::21]:80
