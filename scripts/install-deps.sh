#!/usr/bin/env bash
# Installs the Debian 12 packages versamammo.c needs to build, test and benchmark.
# Idempotent: a quick dpkg check, and apt-get only when something is missing.
set -euo pipefail

BUILD_PKGS=(
  build-essential pkg-config
  libopenblas-openmp-dev   # the OpenMP build: BLAS shares our OpenMP thread pool
  libstb-dev libhdf5-dev zlib1g-dev libopenjp2-7-dev libjpeg62-turbo-dev
  libopenmpi-dev openmpi-bin
  libyaml-dev              # config files
  libcmocka-dev            # test framework
)
# Optional: reference generation and the PyTorch side of `make bench` (never needed to build or test)
REF_PKGS=(python3-torch python3-torchvision python3-h5py python3-sklearn python3-numpy libtcmalloc-minimal4 clang)

want=("${BUILD_PKGS[@]}")
[ "${1:-}" = "--with-reference" ] && want+=("${REF_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
