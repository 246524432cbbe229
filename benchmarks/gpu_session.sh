#!/usr/bin/env bash
# Every GPU number the project records, in one run on one CUDA machine (at most 580 s; 5 min
# on an H200 on 2026-11-30), each part under its own time limit so that a slow part cannot
# take the others' time. Prepare the folder .gpu here, then run the last line there:
#
#   python benchmarks/paper_scale.py resolve config/paper_scale.yaml > .gpu/paper_scale.json
#   python benchmarks/paper_scale.py resolve config/config.yaml > .gpu/demo.json
#   python -c "from cellconcepts.enrich.genesets import go_bp_2023_path as p; print(p())" \
#       | xargs -I{} cp {} .gpu/GO_Biological_Process_2023
#   OUT=results_gpu bash benchmarks/gpu_session.sh .gpu
#
# The configs are resolved where Snakemake is installed (it fills in the schema's defaults)
# and the gene sets come from pyenrichr, so the GPU machine needs only torch, numpy, pandas,
# pyarrow, scikit-learn, scipy, scikit-image, tqdm, threadpoolctl, safetensors and pytest.
# Writes under $OUT: session.log (all output), paper_scale.csv, paper_scale_seconds.json and
# mae_convergence.csv.
set -uo pipefail
settings=${1:?folder with paper_scale.json and demo.json}
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
paper="--dim 1024 --sparsity 100 --atoms-per-iteration 5 --batch 8192 --device cuda"
part 40 "train step, paper shape, M=8192" \
    python benchmarks/train_step.py $paper --features 8192 --steps 10 --warmup 3
part 40 "train step, M=32768" \
    python benchmarks/train_step.py $paper --features 32768 --steps 3 --warmup 1 --rounds 1
part 40 "ICFL encoder paths" python benchmarks/icfl_encoder.py --device cuda --shapes \
    256,32,128,2,2 256,32,128,8,2 256,96,128,4,2 2048,64,512,4,2 4096,256,2048,4,5 \
    8192,1024,8192,4,5 8192,1024,8192,20,5 1024,1024,8192,20,5
part 250 "paper scale through the stages" python benchmarks/paper_scale.py run \
    "$settings/paper_scale.json" --tokens 1000000 --train-seconds 110 --device cuda \
    --out "$out" --work /tmp/paper_scale
part 150 "demo MAE, longer" python benchmarks/mae_convergence.py "$settings/demo.json" \
    --steps 1000 4000 --device cuda --out "$out" --work /tmp/mae_convergence \
    --gene-sets "$settings/GO_Biological_Process_2023"
