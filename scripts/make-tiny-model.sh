#!/usr/bin/env bash
# Builds the project's tiny model (and its damaged twin) for the serving, optimize and e2e tests:
#
#   $LLM_ROLLOUT_CACHE/models/tiny-llama            trained by scripts/make_tiny_model.py (~20-60 s)
#   $LLM_ROLLOUT_CACHE/models/tiny-llama-scrambled  same files, weights permuted and noised
#   $LLM_ROLLOUT_CACHE/models/tiny-llama-retrained  weights moved by 5 % noise (a good retrain)
#   $LLM_ROLLOUT_CACHE/models/tiny-llama-deep       same answers, 10 extra no-op layers (slower)
#
# The cache root is ${LLM_ROLLOUT_CACHE:-$HOME/.cache/llm-rollout}. It first makes sure the vLLM venv
# exists (scripts/make-venv.sh vllm: the maker runs with its torch and transformers). A model is
# rebuilt only when its inputs change: the maker, the corpus and the venv (MODEL/.stamp).
# The last two lines printed are the tiny and scrambled model directories.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${LLM_ROLLOUT_CACHE:-$HOME/.cache/llm-rollout}
models="$cache/models"
tiny="$models/tiny-llama"
scrambled="$models/tiny-llama-scrambled"
maker="$here/make_tiny_model.py"
corpus="$here/tiny_corpus.txt"

bash "$here/make-venv.sh" vllm
py="$cache/venvs/vllm/bin/python"

mkdir -p "$models"
exec 9>"$models/.tiny-llama.lock"
if ! flock -n 9; then
    echo "==> another build of the tiny model is running; waiting for it"
    flock 9
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

up_to_date() { # DIR STAMP
    [[ -f $1/.stamp && -f $1/probes.json && -f $1/reference.jsonl && -f $1/config.json && $(cat "$1/.stamp") == "$2" ]]
}

tiny_stamp=$(cat "$maker" "$corpus" "${BASH_SOURCE[0]}" "$cache/venvs/vllm/.stamp" | sha256sum | cut -d' ' -f1)
if up_to_date "$tiny" "$tiny_stamp"; then
    echo "==> tiny model up to date ($tiny)"
else
    echo "==> training the tiny model into $tiny (scripts/make_tiny_model.py)"
    start=$SECONDS
    rm -f "$tiny/.stamp"
    "$py" "$maker" --out "$tiny"
    echo "$tiny_stamp" >"$tiny/.stamp"
    echo "==> tiny model ready in $((SECONDS - start)) s"
fi

# Copies of the tiny model, each rebuilt when the tiny model changes: FLAG STAMP_NAME DIR.
for variant in "scramble scrambled $scrambled" "retrain retrain $models/tiny-llama-retrained" \
    "deepen deepen $models/tiny-llama-deep"; do
    read -r flag stamp_name dir <<<"$variant"
    stamp=$(echo "$stamp_name $tiny_stamp" | sha256sum | cut -d' ' -f1)
    if up_to_date "$dir" "$stamp"; then
        echo "==> $stamp_name copy up to date ($dir)"
    else
        echo "==> writing the $stamp_name copy into $dir"
        rm -f "$dir/.stamp"
        "$py" "$maker" "--$flag" "$tiny" --out "$dir"
        echo "$stamp" >"$dir/.stamp"
    fi
done

echo "$tiny"
echo "$scrambled"
