#!/usr/bin/env bash
# Installs the Debian packages Contrail builds against (and, with --test, the real clients the tests
# drive), if any is missing. Idempotent.
set -euo pipefail
packages=(libnghttp2-dev libssl-dev libprotobuf-c-dev protobuf-c-compiler libsentencepiece-dev pkg-config)
case "${1:-}" in
  --test) packages+=(curl nghttp2-client wrk openssl) ;;
  --bench) packages+=(nginx-light h2o cmake g++) ;;
esac
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
