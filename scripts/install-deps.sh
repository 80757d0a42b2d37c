#!/bin/sh
# Install what frontier needs to build and test, only what is missing:
# Debian packages with apt-get, and the npm packages the tokenizer and template tests
# use as oracles (tests/oracle/package.json, installed into tests/oracle/node_modules).
# Run as root (or with sudo available). Idempotent and quiet when all is present.
set -e
cd "$(dirname "$0")/.."
need=""
for p in cmake make gcc libcjson-dev libpcre2-dev libutf8proc-dev libevent-dev libcurl4-openssl-dev python3-numpy libgomp1 git; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
command -v node >/dev/null 2>&1 || need="$need nodejs"
command -v npm >/dev/null 2>&1 || need="$need npm"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
if [ -n "$need" ]; then
    echo "install-deps: installing$need"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
fi
# Test oracles from npm. --ignore-scripts: @huggingface/transformers pulls onnxruntime-node,
# whose install script downloads binaries from outside the registry; tokenizers do not need it.
# The marker is a copy of package.json: a changed package.json installs again.
if [ -f tests/oracle/package.json ] && ! cmp -s tests/oracle/package.json tests/oracle/node_modules/.frontier-package.json; then
    echo "install-deps: installing npm test oracles (tests/oracle)"
    (cd tests/oracle && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null &&
        cp package.json node_modules/.frontier-package.json)
fi
