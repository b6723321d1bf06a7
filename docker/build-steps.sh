#!/bin/sh
# The RUN steps of docker/serve.Dockerfile: install torchport from SOURCE into the venv VENV, then check that the
# CLI and the server's imports work (the container's first command must not be where that is found out). Kept in a
# script so that tests/package/test_docker.py runs exactly these steps in a fresh venv; pip reads its usual PIP_*
# settings (the test sets PIP_NO_INDEX: it installs nothing from the network).
#
#   sh docker/build-steps.sh SOURCE VENV [TORCH_INDEX_URL]
set -eu
source_dir=$1
venv=$2
torch_index=${3:-https://download.pytorch.org/whl/cpu}

# a venv that exists already is used as it is (the test makes one whose dependencies are importable already)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# torch first, from the index given (the CPU wheels by default), so that the project's own install keeps it
"$venv/bin/python" -m pip install --no-cache-dir --index-url "$torch_index" "torch>=2.13,<2.14" "torchvision>=0.28,<0.29"
"$venv/bin/python" -m pip install --no-cache-dir "$source_dir"
rm -rf "$source_dir/build"
"$venv/bin/torchport" serve --help >/dev/null
"$venv/bin/python" -c "import onnxruntime, uvicorn, torchport.serve.app"
