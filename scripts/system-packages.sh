#!/usr/bin/env bash
# Optional Debian packages recseg uses when present: real background photographs for
# `recseg footage` (lomiri-wallpapers-16.04: CC-BY-SA/CC0 photos; mate-backgrounds: nature
# photos, several saturated green), a C++ compiler (g++) for torch.compile's CPU code
# (`--compile`, the benchmarks' optimised paths) and a headless browser for the MLflow UI test
# (tests/test_demo.py: chromium, driven by Playwright, never a downloaded browser; with
# fonts-liberation so pages render text) and PostgreSQL (postgresql: the cluster tracking
# server, grid/tracking-server.sh, and its tests, skipped without it). Installed when running
# as root with apt-get; otherwise footage uses scikit-image's bundled photos and generated
# textures only, compiled paths run uncompiled and the browser and PostgreSQL tests are
# skipped. Never fails.
set -uo pipefail
pkgs=(lomiri-wallpapers-16.04 mate-backgrounds g++ chromium fonts-liberation postgresql)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "recseg: installing optional Debian packages: ${missing[*]}"
  apt-get update -qq || echo "recseg: note: apt-get update failed"
  if ! apt_install "${missing[@]}"; then  # one package this distribution lacks: the others still
    for p in "${missing[@]}"; do
      apt_install "$p" || echo "recseg: note: could not install $p (optional)"
    done
  fi
else
  echo "recseg: note: optional packages (photos, compiler, browser, PostgreSQL):" \
    "sudo apt-get install ${missing[*]}"
fi
exit 0
