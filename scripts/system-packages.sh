#!/usr/bin/env bash
# Optional Debian packages recseg uses when present: real background photographs for
# `recseg footage` (lomiri-wallpapers-16.04: CC-BY-SA/CC0 photos; mate-backgrounds: nature
# photos, several saturated green) and a C++ compiler (g++) for torch.compile's CPU code
# (`--compile`, the benchmarks' optimised paths). Installed when running as root with apt-get;
# otherwise footage uses scikit-image's bundled photos and generated textures only, and
# compiled paths run uncompiled. Never fails.
set -uo pipefail
pkgs=(lomiri-wallpapers-16.04 mate-backgrounds g++)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "recseg: installing optional Debian packages: ${missing[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "recseg: note: could not install ${missing[*]}; footage uses bundled photos only"
  fi
else
  echo "recseg: note: optional packages (photos, compiler): sudo apt-get install ${missing[*]}"
fi
exit 0
