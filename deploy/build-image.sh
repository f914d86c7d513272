#!/usr/bin/env bash
# Build the openclaw-node image locally: release binary + the libraries `ldd` names, on
# `FROM scratch`. Usage: deploy/build-image.sh [tag]   (default openclaw-node:local)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-openclaw-node:local}"
cargo build --release -p openclaw-node
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/data" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
cp target/release/openclaw-node "$ctx/rootfs/usr/local/bin/"
# The dynamic loader and every library the binary links, at the same paths.
for lib in $(ldd target/release/openclaw-node | grep -o '/[^ ]*'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
# CA certificates for the real providers (HTTPS), and name resolution for Docker service names.
mkdir -p "$ctx/rootfs/etc/ssl/certs"
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
printf 'hosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"
cp deploy/Dockerfile "$ctx/Dockerfile"
docker build -t "$tag" "$ctx"
echo "built $tag"
