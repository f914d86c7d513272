#!/usr/bin/env bash
# deploy/tls-selfsigned.sh DIR [NAME] — a self-signed certificate for nginx's TLS server:
# DIR/openclaw.crt and DIR/openclaw.key (RSA 2048, 825 days, CN and SAN NAME, default
# `openclaw.example.com`, plus localhost). For trying the stack; put your own certificate and key
# at these two paths in production. Keys are never committed (deploy/tls/ is in .gitignore).
set -euo pipefail
dir="${1:?usage: deploy/tls-selfsigned.sh DIR [NAME]}"
name="${2:-openclaw.example.com}"
command -v openssl >/dev/null || { echo "tls-selfsigned.sh: needs openssl" >&2; exit 1; }
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=$name" \
  -addext "subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1" \
  -keyout "$dir/openclaw.key" -out "$dir/openclaw.crt" 2>/dev/null
# nginx's master process reads the key as root; the certificate is public.
chmod 0644 "$dir/openclaw.crt"
chmod 0600 "$dir/openclaw.key"
echo "self-signed certificate for $name in $dir (replace it with your own in production)"
