# Allow Tailscale network
sudo ufw allow in on tailscale0

# Allow VPS access to specific ports
sudo ufw allow from 100.101.92.95 to any port 8080 proto tcp
