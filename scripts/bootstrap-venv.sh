#!/usr/bin/env bash
# Create the project's virtual environment with a Python 3.11/3.12 interpreter.
# Usage: scripts/bootstrap-venv.sh PYTHON VENV_DIR
# On Debian, `python3 -m venv` needs the python3-venv package: installed here when running as
# root with apt-get, otherwise the script says what to install.
set -euo pipefail
py="${1:-python3}"
venv="${2:-.venv}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pip' 2>/dev/null; then
  exit 0
fi
if ! command -v "$py" >/dev/null 2>&1; then
  echo "recseg: $py not found; install Python 3.11 (Debian: apt-get install python3)" >&2
  exit 1
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)'; then
  echo "recseg: needs Python 3.11 or 3.12, $py is $("$py" -V 2>&1); set PYTHON=python3.11" >&2
  exit 1
fi
rm -rf "$venv"
if ! "$py" -m venv "$venv" >/dev/null 2>&1; then
  rm -rf "$venv"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "recseg: installing Debian's python3-venv (needed by python3 -m venv)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$py" -m venv "$venv"
  else
    echo "recseg: '$py -m venv' failed; install python3-venv (sudo apt-get install python3-venv)" >&2
    exit 1
  fi
fi
echo "recseg: created $venv with $("$venv/bin/python" -V)"
