#!/usr/bin/env bash
# Every GPU number the project records, in one run on one CUDA machine (at most 595 s of
# parts), each part under its own time limit so that a slow part cannot take the others' time.
# mae_convergence.py, in this session until 2026-12-06, now runs on its own (its command is in
# benchmarks/README.md). Prepare the folder .gpu here, then run the last line there:
#
#   python benchmarks/paper_scale.py resolve config/paper_scale.yaml > .gpu/paper_scale.json
#   OUT=results_gpu bash benchmarks/gpu_session.sh .gpu
#
# The config is resolved where Snakemake is installed (it fills in the schema's defaults), so
# the GPU machine needs only torch, numpy, pandas, pyarrow, scikit-learn, scipy, scikit-image,
# tqdm, threadpoolctl, safetensors and pytest.
# Writes under $OUT: session.log (all output), paper_scale.csv and paper_scale_seconds.json.
# Commit them under benchmarks/results/gpu_session-DATE/ (not an ignored folder).
set -uo pipefail
settings=${1:?folder with paper_scale.json}
out=${OUT:?set OUT to the folder for the results}
mkdir -p "$out"
export PYTHONPATH="$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="$out/session.log"
part() { # part SECONDS TITLE COMMAND...
    local seconds=$1 title=$2
    shift 2
    echo "=== $title ($(date -u +%T), limit ${seconds} s)" | tee -a "$log"
    timeout "$seconds" "$@" 2>&1 | tee -a "$log"
    echo "=== $title: exit ${PIPESTATUS[0]} at $(date -u +%T)" | tee -a "$log"
}

part 15 "machine" bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
    python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; nproc'
part 45 "GPU tests" python -m pytest -q -m gpu -p no:cacheprovider \
    tests/dictionary/test_icfl.py tests/dictionary/test_whitening.py tests/dictionary/test_training.py
paper="--dim 1024 --sparsity 100 --atoms-per-iteration 5 --device cuda"
step() { # step SECONDS TITLE ARGS...: one train_step.py run
    local seconds=$1 title=$2
    shift 2
    part "$seconds" "train step, $title" python benchmarks/train_step.py $paper "$@"
}
# Issue 31: both methods at the paper's shape, ICFL's Gram path (gathered rows of G) against its
# residual path, with where the time goes; then reading batches from a store, both batches,
# and four times the width.
step 45 "M 8192, batch 8192, Gram path, profiled" --features 8192 --batch 8192 \
    --encoder gram --steps 10 --warmup 3 --profile --profile-rows 10
step 30 "M 8192, batch 8192, residual path" --features 8192 --batch 8192 \
    --encoder residual --steps 10 --warmup 3
step 45 "M 8192, batch 8192, Gram path, sparse products (gathered decoder columns)" \
    --features 8192 --batch 8192 --encoder gram --sparse-products on --steps 10 --warmup 3 \
    --profile --profile-rows 10
for reading in foreground background; do
    step 50 "M 8192, batch 8192, Gram path, batches read in the $reading" --features 8192 \
        --batch 8192 --encoder gram --reading $reading --store-tokens 524288 --steps 10 \
        --warmup 3
done
for encoder in gram residual; do
    step 30 "M 8192, batch 1024, $encoder path" --features 8192 --batch 1024 \
        --encoder $encoder --steps 20 --warmup 3
    step 60 "M 32768, batch 8192, $encoder path" --features 32768 --batch 8192 \
        --encoder $encoder --steps 3 --warmup 1 --rounds 1
done
part 45 "ICFL encoder paths, atoms against the CPU" python benchmarks/icfl_encoder.py \
    --device cuda --compare-cpu --shapes \
    256,32,128,2,2 2048,64,512,4,2 4096,256,2048,4,5 8192,1024,8192,20,5 1024,1024,8192,20,5
part 90 "paper scale through the stages" python benchmarks/paper_scale.py run \
    "$settings/paper_scale.json" --tokens 300000 --steps 50 --device cuda \
    --out "$out" --work /tmp/paper_scale
