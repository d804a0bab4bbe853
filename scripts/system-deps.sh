#!/usr/bin/env bash
# Install the Debian packages that Dispatch needs, if any is missing.
#   scripts/system-deps.sh run    what the service needs (WeasyPrint's Pango and HarfBuzz)
#   scripts/system-deps.sh test   plus what the tests read the outputs with (and SoftHSM2,
#                                 the PKCS#11 token the signing tests keep a key on, and zbar,
#                                 which reads the letters' QR codes back), the IMAP
#                                 server (Dovecot, started by the tests themselves) they read
#                                 bounces from; Java for the Nu Html Checker and npm for the
#                                 page checkers (package.json)
set -euo pipefail
run_pkgs=(libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 shared-mime-info)
test_pkgs=(poppler-utils libreoffice-writer-nogui chromium fonts-liberation2 dovecot-imapd openssl
           default-jre-headless nodejs softhsm2 zbar-tools)
pkgs=("${run_pkgs[@]}")
[ "${1:-run}" = test ] && pkgs+=("${test_pkgs[@]}")
# Debian packages npm apart from nodejs; NodeSource's nodejs carries its own.
[ "${1:-run}" = test ] && ! command -v npm >/dev/null && pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "Please install these system packages: ${missing[*]}" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "Please install (as root): apt-get install ${missing[*]}" >&2; exit 1
  fi
fi
echo "Installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
