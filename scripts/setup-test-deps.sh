#!/usr/bin/env bash
# Installs what the whole test suite needs beyond Rust and Go, idempotently (only what is
# missing): the real node's Debian packages (containerd, runc, CNI plugins, socat, nftables,
# umoci, iproute2; tmux for the kubectl plugin's terminal test; prometheus and promtool for the
# metrics tests; as root with apt-get), Python >= 3.11 with venv, rembg's server with u2netp
# and ONNX Runtime (backends/scripts/setup-rembg.sh), and checkov (charts/scripts/setup-checkov.sh).
# `cargo xtask test` runs it first; so does .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
pkgs=()
for p in containerd:containerd runc:runc socat:socat nft:nftables umoci:umoci ip:iproute2 \
         nsenter:util-linux setpriv:util-linux cc:build-essential \
         tmux:tmux promtool:prometheus; do
  need "${p%%:*}" || pkgs+=("${p#*:}")
done
[ -x /usr/lib/cni/ptp ] || pkgs+=(containernetworking-plugins)
python3 -c 'import ensurepip, sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
  || pkgs+=(python3 python3-venv)
if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install ${pkgs[*]}" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}") >&2
  else
    echo "setup: missing Debian packages ${pkgs[*]}: install them as root (apt-get install ${pkgs[*]})" >&2
    exit 1
  fi
fi
backends/scripts/setup-rembg.sh >/dev/null
charts/scripts/setup-checkov.sh
