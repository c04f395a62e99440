#!/usr/bin/env bash
# Installs the system programs the test suite drives for real: OpenSSH's sshd (the SSH transport
# is tested against a real server on loopback), Chromium with fonts (the HTML report is opened in a
# real headless browser), pdflatex (the LaTeX tables are compiled) and pdffonts (the fonts
# of the paper figures are checked). Does nothing when they are
# already present.
set -euo pipefail
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -d /usr/share/fonts/truetype/liberation ] || need+=(fonts-liberation)
# pdflatex, so the test that compiles the report's LaTeX tables runs rather than skips
command -v pdflatex >/dev/null 2>&1 || need+=(texlive-latex-recommended)
# pdffonts, so the test that checks the paper figures embed their fonts runs rather than skips
command -v pdffonts >/dev/null 2>&1 || need+=(poppler-utils)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
else
    sudo=
fi
echo "installing ${need[*]} (Debian packages) for the tests"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
