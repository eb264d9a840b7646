# olmo2spec tasks. `just --list` shows them all.
python := "python3"
export PIP_ROOT_USER_ACTION := "ignore"
export PIP_DISABLE_PIP_VERSION_CHECK := "1"

# Install olmo2spec and its runtime dependencies.
install:
    {{python}} -m pip install -q -e .

# Install with the test and lint tools, and the runtime's torch (the CPU wheel this machine has).
install-dev:
    {{python}} -m pip install -q torch==2.13.0
    {{python}} -m pip install -q -e '.[dev]'

# The main job: build the 13B bundle, then run the tiny recipe end to end on this machine (demo
# data -> prepare -> pretrain -> microanneals -> 2 anneal ingredients -> soup -> eval, with an HF
# export of the soup; then SFT -> DPO -> RLVR (GRPO) -> eval -> HF export of the RLVR model) and
# print the table, instruct rows on held-out post-training data included. Reruns skip what is
# done; .demo/ holds everything.
demo: install-dev
    #!/usr/bin/env bash
    set -euo pipefail
    # `python -m`, never the console script: on pyenv it is not on PATH until a rehash.
    export PYTHON="{{python}}"
    {{python}} -m olmo2spec check specs/*.toml
    {{python}} -m olmo2spec build specs/13b.toml
    bash generated/13b/launch/submit.sh --dry-run
    {{python}} -m olmo2spec build specs/tiny.toml
    export DATA_ROOT="$PWD/.demo/data" CHECKPOINT_ROOT="$PWD/.demo/checkpoints"
    {{python}} -m olmo2spec demo-data "$DATA_ROOT"
    bash generated/tiny/launch/local.sh prepare pretrain microanneal anneal soup eval-base \
        sft dpo rlvr eval-instruct export
    {{python}} -m olmo2spec demo-report generated/tiny

# Pretrain + one anneal ingredient + eval for 5 recipe seeds x 1 and 2 threads per process, 10-22 minutes
# each on 2 shared cores (.demo-range/ keeps them; reruns reuse them): the demo's held-out math lift and its range.
demo-range: install-dev
    {{python}} benchmarks/demo_range.py --seeds 1234,1,2,3,4 --threads 1,2 --work .demo-range

# SFT -> DPO -> RLVR from the demo's soup for post-training seeds 1234, 1 x 1 and 2 threads per process, 6-7
# minutes each on 2 cores (`just demo` first; .posttrain-range/ keeps them): does each stage raise its number every run?
posttrain-range: install-dev
    {{python}} benchmarks/posttrain_range.py --base .demo/checkpoints --data .demo/data --seeds 1234,1 --threads 1,2

# Rebuild the golden bundles in generated/ from specs/ (review the diff, then commit).
golden: install
    for spec in specs/*.toml; do {{python}} -m olmo2spec build "$spec" || exit 1; done

# The test suite (the notebooks in a real browser too, where a chromium is found or installable), then lint and types.
test: install-dev
    #!/usr/bin/env bash
    set -euo pipefail
    # .ci/chromium.sh prints Debian's chromium (installing it as root with apt), or nothing and why not;
    # tests/notebook/test_browser.py drives it, or skips naming what is missing.
    export OLMO2SPEC_CHROMIUM="$(bash .ci/chromium.sh || true)"
    {{python}} -m pytest -q
    {{python}} -m ruff check olmo2spec tests benchmarks
    {{python}} -m mypy

# JupyterLab on notebooks/ with the demo's data, checkpoints and bundle (`just demo` first if missing); prints the URL.
lab: install-dev
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -d .demo/checkpoints ]; then {{just_executable()}} demo; fi
    export DATA_ROOT="$PWD/.demo/data" CHECKPOINT_ROOT="$PWD/.demo/checkpoints" OLMO2SPEC_BUNDLE="$PWD/generated/tiny"
    port="$({{python}} -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    token="$({{python}} -c 'import secrets; print(secrets.token_hex(16))')"
    root=""; if [ "$(id -u)" = 0 ]; then root="--allow-root"; fi
    echo "JupyterLab: http://127.0.0.1:$port/lab?token=$token  (notebooks/: mixes.ipynb, microanneals.ipynb, runs.ipynb, soups.ipynb; Ctrl-C stops it)"
    exec {{python}} -m jupyter lab --no-browser --ip=127.0.0.1 --port="$port" --ServerApp.port_retries=0 \
        --IdentityProvider.token="$token" --ServerApp.root_dir="$PWD/notebooks" $root

# Lint and type-check only.
lint: install-dev
    {{python}} -m ruff check olmo2spec tests benchmarks
    {{python}} -m mypy

# Wall time of `olmo2spec check specs/13b.toml` against `python -c pass`.
bench-compile: install
    {{python}} benchmarks/bench_compile.py

# Loader tokens/s against a tiny training step, and tokenizer MB/s against tiktoken, same run.
bench-data: install
    {{python}} -m pip install -q torch==2.13.0
    {{python}} benchmarks/bench_tokenizer.py
    {{python}} benchmarks/bench_data.py

# Tiny-recipe train-step tokens/s against transformers' Olmo2ForCausalLM, same shapes, same run.
bench-train: install-dev
    {{python}} benchmarks/bench_train.py

# Tiny-recipe SFT step, conversation tokens/s: packed (ours) against transformers' padded batches, same run.
bench-sft: install-dev
    {{python}} benchmarks/bench_sft.py

# A 4-ingredient soup of a 170M-parameter model: peak RSS and time, streamed against naive, same run.
bench-soup: install-dev
    {{python}} benchmarks/bench_soup.py

# Eval generation tokens/s on the tiny model: the cached decode against the uncached full forward, same run.
bench-generate: install-dev
    {{python}} benchmarks/bench_generate.py

# The SLURM integration tests on a throwaway one-node cluster (root: installs slurm-wlm and munge if missing).
slurm-test: install-dev
    #!/usr/bin/env bash
    set -euo pipefail
    dir="$(mktemp -d)"
    trap 'bash .ci/slurm.sh down "$dir"' EXIT
    eval "$(bash .ci/slurm.sh up "$dir")"
    OLMO2SPEC_SLURM_DIR="$dir" {{python}} -m pytest -q -m slurm tests/integration

# One mix edit in the notebook's mix explorer (re-check + redraw, in-process) against `olmo2spec check` as a process.
bench-notebook: install-dev
    {{python}} benchmarks/bench_notebook.py

# Tiny-anneal-shaped steps (2 gloo processes, 4 sequences): one FSDP unit against one per block, same run, same losses.
bench-fsdp-units: install-dev
    {{python}} benchmarks/bench_fsdp_units.py

# Post-training against TRL, same model, data, threads and batch, same run: SFT tokens/s, DPO pairs/s and GRPO
# episodes/s, generation and update together (SFTTrainer, DPOTrainer, GRPOTrainer). Ours wins where the ratio is above 1.
bench-posttrain: install-dev
    {{python}} benchmarks/bench_posttrain.py

# Every benchmark.
bench: bench-compile bench-data bench-train bench-sft bench-soup bench-notebook bench-generate bench-fsdp-units bench-posttrain
