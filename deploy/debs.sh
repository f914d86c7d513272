#!/usr/bin/env bash
# deploy/debs.sh PACKAGE — fetch one Debian package with `apt-get download` (the host's apt
# sources, so its libraries match the host's), unpack it with `dpkg-deb -x` without installing
# anything, and print the folder it was unpacked into. Nothing is pulled from an image registry.
#
#   "$(deploy/debs.sh prometheus)/usr/bin/promtool" test rules monitoring/alert_rules_test.yml
#
# Cache: $OPENCLAW_DEB_CACHE (default ~/.cache/openclaw-debs); a package is downloaded again only
# when apt's candidate version changes. Needs apt's package lists (`apt-get update` once).
set -euo pipefail
pkg="${1:?usage: deploy/debs.sh PACKAGE}"
cache="${OPENCLAW_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openclaw-debs}"
mkdir -p "$cache/debs" "$cache/root"
# One unpacker at a time (build-images.sh and .ci/run may run side by side).
exec 9>"$cache/.lock"
flock 9

version="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  echo "debs.sh: apt knows no candidate for '$pkg' (run \`apt-get update\`; is this a Debian host?)" >&2
  exit 1
fi
root="$cache/root/${pkg}_${version//:/%3a}"
if [ ! -f "$root/.unpacked" ]; then
  deb="$(ls "$cache/debs/${pkg}_${version//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)"
  if [ -z "$deb" ]; then
    # As root, apt's sandbox user cannot write into a home folder: download as root.
    sandbox=()
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$cache/debs" && apt-get download -q "${sandbox[@]}" "$pkg=$version" >&2)
    deb="$(ls "$cache/debs/${pkg}_${version//:/%3a}_"*.deb | head -n1)"
  fi
  rm -rf "$root"
  mkdir -p "$root"
  dpkg-deb -x "$deb" "$root"
  printf '%s %s\n' "$pkg" "$version" > "$root/.unpacked"
fi
echo "$root"
