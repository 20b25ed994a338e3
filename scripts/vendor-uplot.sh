#!/usr/bin/env bash
# Vendors uPlot (the console's chart library) into the repository from the npm registry: the
# exact version below, its tarball checked against the registry's published integrity hash,
# only its dist files (and licence) kept. The console embeds them in the binary, so nothing is
# fetched at run time. To upgrade: change VERSION and INTEGRITY (`npm view uplot@X dist.integrity`).
set -euo pipefail
VERSION=1.6.32
INTEGRITY='sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=='
cd "$(dirname "$0")/.."
DEST=crates/clary-api/src/console/assets/vendor/uplot
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL "https://registry.npmjs.org/uplot/-/uplot-$VERSION.tgz" -o "$tmp/uplot.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/uplot.tgz" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "uplot-$VERSION.tgz does not match its pinned integrity hash: got $got" >&2
  exit 1
fi
tar -xzf "$tmp/uplot.tgz" -C "$tmp"
mkdir -p "$DEST"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$tmp/package/LICENSE" "$DEST/"
echo "$VERSION $INTEGRITY" > "$DEST/VERSION"
echo "vendored uPlot $VERSION into $DEST"
