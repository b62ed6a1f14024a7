#!/bin/sh
# Builds kubectl-clothjob (release) and the krew archive for this machine's platform, and writes
# the manifest with the archive's sha256 next to it:
#   target/krew/kubectl-clothjob-<os>-<arch>.tar.gz
#   target/krew/clothjob.yaml
# Install it locally with:
#   kubectl krew install --manifest=target/krew/clothjob.yaml \
#     --archive=target/krew/kubectl-clothjob-linux-amd64.tar.gz
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release -p clothjob-cli --bin kubectl-clothjob
os=$(uname -s | tr '[:upper:]' '[:lower:]')
case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
out=target/krew
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage"
cp target/release/kubectl-clothjob "$stage/"
# The release profile keeps line tables for backtraces; the plugin ships without them.
if command -v strip >/dev/null; then strip "$stage/kubectl-clothjob"; fi
archive=$out/kubectl-clothjob-$os-$arch.tar.gz
# Reproducible: fixed order, owner and mtime, gzip without a timestamp.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -cf - kubectl-clothjob | gzip -n > "$archive"
sha=$(sha256sum "$archive" | cut -d' ' -f1)
sed -e "s/os: linux/os: $os/" -e "s/arch: amd64/arch: $arch/" \
    -e "s/kubectl-clothjob-linux-amd64.tar.gz/kubectl-clothjob-$os-$arch.tar.gz/" \
    -e "s/sha256: \"0\{64\}\"/sha256: \"$sha\"/" plugins/krew/clothjob.yaml > "$out/clothjob.yaml"
echo "$archive"
echo "$out/clothjob.yaml (sha256 $sha)"
