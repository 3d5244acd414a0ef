#!/usr/bin/env bash
# Regenerate Sources/CJetStream from Protos/jetstream.proto with protoc-c (Debian protobuf-c-compiler).
# --check: regenerate into a temp folder and fail if the committed files differ.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc-c >/dev/null || { echo "gen-proto: protoc-c not found (apt-get install protobuf-c-compiler)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protoc-c --proto_path=Protos --c_out="$out" Protos/jetstream.proto
# SwiftPM wants public headers under include/; the .c file includes its header by bare name.
if [[ "${1:-}" == "--check" ]]; then
  if ! cmp -s "$out/jetstream.pb-c.c" Sources/CJetStream/jetstream.pb-c.c ||
     ! cmp -s "$out/jetstream.pb-c.h" Sources/CJetStream/include/jetstream.pb-c.h; then
    echo "gen-proto: Sources/CJetStream is stale; run scripts/gen-proto.sh and commit the result" >&2
    exit 1
  fi
  echo "gen-proto: Sources/CJetStream matches Protos/jetstream.proto"
else
  cp "$out/jetstream.pb-c.c" Sources/CJetStream/jetstream.pb-c.c
  cp "$out/jetstream.pb-c.h" Sources/CJetStream/include/jetstream.pb-c.h
  echo "gen-proto: wrote Sources/CJetStream"
fi
