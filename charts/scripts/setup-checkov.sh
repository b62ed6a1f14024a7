#!/usr/bin/env bash
# Installs checkov (the IaC scanner the chart's checkov test runs on the rendered chart) into a
# Python venv, once. Idempotent and quiet: nothing is installed when the pinned version is there.
#
#   charts/scripts/setup-checkov.sh
#
# env: CLOTHJOB_CHECKOV_VENV (default ~/.cache/clothjob/checkov-venv)
#      PYTHON (default python3; checkov 3.2 needs Python >= 3.9)
# Prints the binary's path at the end: `checkov=...` (the test finds it there, or through
# CLOTHJOB_CHECKOV).
set -euo pipefail
version=3.2.533
venv=${CLOTHJOB_CHECKOV_VENV:-$HOME/.cache/clothjob/checkov-venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
if [ ! -x "$venv/bin/checkov" ] \
   || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' 2>/dev/null)" != "$version" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check "checkov==$version" >&2
fi
echo "checkov=$venv/bin/checkov"
