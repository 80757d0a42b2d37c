#!/bin/sh
# Install the Debian packages frontier needs to build and test, only those missing.
# Run as root (or with sudo available). Idempotent and quiet when all is present.
set -e
need=""
for p in cmake make gcc libcjson-dev python3-numpy libgomp1 git; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
[ -z "$need" ] && exit 0
echo "install-deps: installing$need"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
