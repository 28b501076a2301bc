#!/bin/sh
# Point DOMAIN at IP in /etc/hosts, replacing what airlock wrote before:
# etc-hosts.sh IP DOMAIN
set -eu
ip=$1
domain=$2
tmp=/etc/hosts.airlock-tmp
if [ -f /etc/hosts ]; then
    grep -v " $domain # airlock\$" /etc/hosts > "$tmp" || true
else
    : > "$tmp"
fi
printf '%s %s # airlock\n' "$ip" "$domain" >> "$tmp"
chmod 644 "$tmp"
# /etc/hosts may be a bind mount (containers, test hosts): rewrite in place, not rename.
cat "$tmp" > /etc/hosts
rm -f "$tmp"
