#!/usr/bin/env bash
# GPU speed check, prepared for a machine with a CUDA GPU (not run yet: no GPU has been lent so far).
#
# Installs rdevos from this checkout, then
#   1. `rdevos bench --device cuda --precision fp32,fp16` at 480p (official architecture, random weights) and for
#      the embedded default model: frames/s and CUDA peak memory (torch.cuda.max_memory_allocated);
#   2. a DAVIS-length video (80 frames, the DAVIS-2017 val mean is ~69) at 480p, 2 objects, as the paper's setting;
# and prints the paper's figures next to them: RDE-VOS 27 FPS on DAVIS-2017 val (V100), 88.8 FPS (A100, as
# reported in the SAM 2 paper). Those are end-to-end FPS of a different GPU; compare orders of magnitude.
#
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]     (OUT_DIR default: ./gpu-check; about 5 minutes on one GPU)
set -euo pipefail
OUT="${1:-${OUT:-./gpu-check}}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"

if ! "$PY" -c "import rdevos" 2>/dev/null; then
  "$PY" -m pip install -q -e . 2>&1 | tail -2
fi
"$PY" - <<'EOF' | tee "$OUT/device.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device visible"
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(),
      "memory_GiB", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/device.txt" || true

# 1. official architecture (random weights; speed does not depend on them), fp32 and fp16, 480p
rdevos bench --device cuda --precision fp32,fp16 --resolutions 480 --lengths 25,100 --top-k 20 --mem-every 4 \
  --no-progress -o "$OUT/bench_official.json" | tee "$OUT/bench_official.txt"
# embedded default model at 480p
rdevos bench --device cuda --precision fp32,fp16 --resolutions 480 --lengths 100 --top-k 20 --mem-every 4 \
  --model rdevos-lite2 --no-progress -o "$OUT/bench_default.json" | tee "$OUT/bench_default.txt"
# 2. a DAVIS-length video, official architecture, the DAVIS-2017 setting (top-k 40, memory every 3rd frame)
rdevos bench --device cuda --precision fp32,fp16 --resolutions 480 --lengths 80 --top-k 40 --mem-every 3 \
  --no-progress -o "$OUT/bench_davis_length.json" | tee "$OUT/bench_davis_length.txt"

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("paper: RDE-VOS 27 FPS DAVIS-2017 val (V100); 88.8 FPS (A100, SAM 2 paper)")
for name in ("bench_official", "bench_default", "bench_davis_length"):
    rep = json.loads((out / f"{name}.json").read_text())
    for r in rep["rows"]:
        if r.get("error"):
            print(f"{name}: {r['precision']} {r['length']} frames failed: {r['error']}")
            continue
        print(f"{name}: {rep['machine'].get('cuda_device')} {r['precision']} {r['width']}x{r['height']} "
              f"{r['length']} frames: {r['fps']:.1f} frames/s, CUDA peak {r['cuda_max_allocated_mib']:.0f} MiB")
EOF
