#!/usr/bin/env bash
# Build every image docker-compose.prod.yml runs, locally, with nothing pulled from a registry:
#
#   openclaw-node:TAG            the gateway: an openclaw-node binary (+ static busybox for /ready)
#   openclaw-nginx:TAG           Debian's nginx
#   openclaw-prometheus:TAG      Debian's prometheus
#   openclaw-alertmanager:TAG    Debian's prometheus-alertmanager
#   openclaw-nginx-exporter:TAG  Debian's prometheus-nginx-exporter
#   openclaw-node-exporter:TAG   Debian's prometheus-node-exporter
#
# Each is `FROM scratch` with the binaries and the shared libraries `ldd` names (copied from this
# host; the packages come from this host's apt sources, so they match), plus the few files the
# program needs (deploy/images/*.Dockerfile say which). Grafana is the one image of the stack
# that is not built here: it has no Debian package (compose profile `grafana`, pulled).
#
# Usage: deploy/build-images.sh [--tag TAG] [--binary PATH] [--only NAME,...] [--tls-dir DIR]
#   --tag TAG      image tag (default `local`; docker-compose.prod.yml reads OPENCLAW_IMAGE_TAG)
#   --binary PATH  the openclaw-node binary for the gateway image (any build; a stripped copy is
#                  used). Default: `cargo build --release -p openclaw-node` and its binary.
#   --only NAMES   build only these (gateway, nginx, prometheus, alertmanager, nginx-exporter,
#                  node-exporter)
#   --tls-dir DIR  where nginx's certificate is (default deploy/tls, OPENCLAW_TLS_DIR in
#                  docker-compose.prod.yml): a self-signed one is made there when there is none
#                  (replace it with your own; deploy/tls/ is not committed)
set -euo pipefail
cd "$(dirname "$0")/.."

tag=local
binary=""
only="gateway,nginx,prometheus,alertmanager,nginx-exporter,node-exporter"
tls_dir=deploy/tls
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --only) only="${2:?--only needs names}"; shift 2 ;;
    --tls-dir) tls_dir="${2:?--tls-dir needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }
die() { echo "build-images.sh: $*" >&2; exit 1; }

for tool in docker ldd; do
  command -v "$tool" >/dev/null || die "needs \`$tool\`"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# install_bin ROOTFS SRC DEST: SRC at DEST in ROOTFS, and every library `ldd SRC` names at its
# own path (the dynamic loader included). A library `ldd` cannot find is an error.
install_bin() {
  local rootfs="$1" src="$2" dest="$3" out lib
  mkdir -p "$rootfs$(dirname "$dest")"
  cp -L "$src" "$rootfs$dest"
  chmod 0755 "$rootfs$dest"
  if ! out="$(ldd "$src" 2>&1)"; then
    grep -q "not a dynamic executable" <<<"$out" && return 0
    die "ldd $src: $out"
  fi
  if grep -q "not found" <<<"$out"; then
    die "$src needs libraries this host lacks:"$'\n'"$(grep 'not found' <<<"$out")"
  fi
  for lib in $(grep -o '/[^ ]*' <<<"$out"); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}

# base_files ROOTFS USER:UID: /etc/passwd, /etc/group and /etc/nsswitch.conf (users and Docker's
# DNS for service names), /tmp.
base_files() {
  local rootfs="$1" user="${2%%:*}" uid="${2##*:}"
  mkdir -p "$rootfs/etc" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
    > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
  if [ "$user" != nobody ]; then
    printf '%s:x:%s:%s:%s:/nonexistent:/sbin/nologin\n' "$user" "$uid" "$uid" "$user" >> "$rootfs/etc/passwd"
    printf '%s:x:%s:\n' "$user" "$uid" >> "$rootfs/etc/group"
  fi
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
}

# build NAME PACKAGE-LABEL: docker build of $work/NAME with deploy/images/NAME.Dockerfile.
build() {
  local name="$1" label="$2" image
  if [ "$name" = gateway ]; then image="openclaw-node:$tag"; else image="openclaw-$name:$tag"; fi
  mkdir -p "$work/$name/data"
  cp "deploy/images/$name.Dockerfile" "$work/$name/Dockerfile"
  docker build -q --label "org.openclaw.built-from=$label" -t "$image" "$work/$name" >/dev/null 2>"$work/$name.log" \
    || { cat "$work/$name.log" >&2; die "docker build of $image failed"; }
  printf '  %-32s %s\n' "$image" "$label"
}

# deb PACKAGE: the folder the package is unpacked in (deploy/debs.sh).
deb() { deploy/debs.sh "$1"; }
debver() { cut -d' ' -f2 "$1/.unpacked"; }

echo "building images (tag $tag):"

if wants gateway; then
  if [ -z "$binary" ]; then
    nice -n 10 cargo build --release -p openclaw-node
    binary=target/release/openclaw-node
  fi
  [ -x "$binary" ] || die "no executable at $binary"
  r="$work/gateway/rootfs"
  install_bin "$r" "$binary" /usr/local/bin/openclaw-node
  if command -v strip >/dev/null; then strip "$r/usr/local/bin/openclaw-node"; fi
  bb="$(deb busybox-static)"
  install_bin "$r" "$bb/bin/busybox" /bin/busybox
  base_files "$r" openclaw:10001
  # CA certificates for the real providers (HTTPS).
  mkdir -p "$r/etc/ssl/certs"
  cp -L /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/" \
    || die "no /etc/ssl/certs/ca-certificates.crt (install ca-certificates)"
  build gateway "openclaw-node $("$binary" --version 2>/dev/null | awk '{print $2}'), busybox-static $(debver "$bb")"
fi

if wants nginx; then
  d="$(deb nginx)"
  r="$work/nginx/rootfs"
  install_bin "$r" "$d/usr/sbin/nginx" /usr/sbin/nginx
  base_files "$r" nginx:101
  mkdir -p "$r/var/lib/nginx" "$r/var/log/nginx" "$r/run" "$r/etc/nginx/tls" "$r/usr/share/nginx"
  build nginx "nginx $(debver "$d")"
fi

if wants prometheus; then
  d="$(deb prometheus)"
  r="$work/prometheus/rootfs"
  install_bin "$r" "$d/usr/bin/prometheus" /usr/bin/prometheus
  base_files "$r" nobody:65534
  mkdir -p "$r/etc/prometheus"
  build prometheus "prometheus $(debver "$d")"
fi

if wants alertmanager; then
  d="$(deb prometheus-alertmanager)"
  r="$work/alertmanager/rootfs"
  install_bin "$r" "$d/usr/bin/prometheus-alertmanager" /usr/bin/alertmanager
  base_files "$r" nobody:65534
  mkdir -p "$r/etc/alertmanager"
  build alertmanager "prometheus-alertmanager $(debver "$d")"
fi

if wants nginx-exporter; then
  d="$(deb prometheus-nginx-exporter)"
  r="$work/nginx-exporter/rootfs"
  install_bin "$r" "$d/usr/bin/prometheus-nginx-exporter" /usr/bin/nginx-prometheus-exporter
  base_files "$r" nobody:65534
  build nginx-exporter "prometheus-nginx-exporter $(debver "$d")"
fi

if wants node-exporter; then
  d="$(deb prometheus-node-exporter)"
  r="$work/node-exporter/rootfs"
  install_bin "$r" "$d/usr/bin/prometheus-node-exporter" /usr/bin/node_exporter
  base_files "$r" nobody:65534
  build node-exporter "prometheus-node-exporter $(debver "$d")"
fi

# A self-signed certificate for nginx's TLS server (443) when none is there yet.
if wants nginx && [ ! -f "$tls_dir/openclaw.crt" ]; then
  deploy/tls-selfsigned.sh "$tls_dir"
fi
