#!/usr/bin/env bash
# Install the Debian packages (and the pinned axe-core) the test suite needs, only when they are missing.
set -euo pipefail
need=()

install_needed() {
  "$(dirname "$0")/apt-install.sh" ${need[@]+"${need[@]}"}
}

# The media service's compiled send path (services/media/fastpath.c, `make install`): a C compiler and
# the headers of the Python that runs it. `system-deps.sh build` installs only these.
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || need+=(python3-dev)
if [ "${1:-}" = build ]; then
  install_needed
  exit 0
fi
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null 2>&1 || need+=(ldap-utils)
# SAML signatures for the 1177 SAML login (pysaml2 runs xmlsec1).
command -v xmlsec1 >/dev/null 2>&1 || need+=(xmlsec1)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# The browser test runs in a private network namespace (unshare -rn; `ip` brings loopback up).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
# The SITHS login test puts a real nginx (as ingress-nginx configures it) in front of the gateway.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
# The dial-in tests call in with real SIP clients: SIPp (sip-tester) and baresip (its aufile, sndfile,
# alsa modules: a WAV microphone, a recorder of what it hears, ALSA's null device as the speaker; its srtp,
# g722 and opus modules: SRTP with SDES over SIP/TLS, and the wideband codecs).
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
# The network topology tests (tests/network): namespaces, NAT and firewall rules, rate limits, and
# coturn as the TURN server (TLS on 443).
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need+=(iptables)
command -v tc >/dev/null 2>&1 || [ -x /usr/sbin/tc ] || need+=(iproute2)
command -v turnserver >/dev/null 2>&1 || [ -x /usr/bin/turnserver ] || need+=(coturn)
command -v npm >/dev/null 2>&1 || need+=(npm)
install_needed

# axe-core (WCAG checks injected into the browser tests' pages; tests/gateway/axe.py), pinned and
# checked: fetched once from the npm registry with npm's own client into build/ (gitignored), not
# committed (a 0.5 MB minified third-party file). The browser tests run without a network, so
# they read this file and fail naming this script when it is missing.
AXE_VERSION=4.14.1
AXE_SHA256=e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745
AXE_DIR="$(cd "$(dirname "$0")/.." && pwd)/build/axe-core"
if [ ! -f "$AXE_DIR/$AXE_VERSION/axe.min.js" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "axe-core@$AXE_VERSION" >/dev/null)
  echo "$AXE_SHA256  $tmp/axe-core-$AXE_VERSION.tgz" | sha256sum -c --quiet -
  mkdir -p "$AXE_DIR/$AXE_VERSION"
  tar -xzf "$tmp/axe-core-$AXE_VERSION.tgz" -C "$tmp"
  cp "$tmp/package/axe.min.js" "$tmp/package/LICENSE" "$AXE_DIR/$AXE_VERSION/"
  rm -rf "$tmp"
fi
