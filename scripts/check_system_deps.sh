#!/usr/bin/env bash
# System packages `make setup` needs (Debian 12 / Ubuntu 22.04 names):
#   python3.11 (with venv), cmake, g++, make, libegl1 libegl-mesa0 libgl1-mesa-dri (MuJoCo offscreen rendering)
# Installs the missing ones with apt-get when running as root; otherwise says what to install.
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v "${PYTHON:-python3.11}" >/dev/null || missing+=(python3.11 python3.11-venv python3.11-dev)
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then missing+=(libegl1 libegl-mesa0 libgl1-mesa-dri); fi
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
