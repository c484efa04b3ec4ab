"""The selective scan on a GPU: profile.py's scan sweep at the Decision Mamba's training shape
(64 x 60 tokens, D 256, N 16) and a long language-model one (8 x 4096, D 1536, N 16), fp32 and
bf16 inputs, forward and forward + backward: the Triton kernel against the PyTorch scan and the
reference loop, with the bandwidth of the traffic a perfect kernel cannot avoid against the GPU's
peak, the kernel's two targets (forward >= 50% of peak, forward + backward >= 20x the PyTorch
scan) and max |y - y_torch|. On the CPU the same sweep is
  python profile.py --sweeps scan --scan-shapes 64x60x256x16 \\
      --scan-backends ref,torch,c,ref-precomputed

Run:  python benchmarks/bench_scan_gpu.py [any profile.py flag, e.g. --scan-dtypes bfloat16]
Writes results/scan-gpu/profile-cuda-<gpu>.json and .md (--out DIR moves them).
"""
import runpy
import sys

from harness import ROOT

PRESET = ["--sweeps", "scan", "--device", "cuda", "--out", "results/scan-gpu", "--scan-shapes",
          "64x60x256x16,8x4096x1536x16", "--scan-dtypes", "float32,bfloat16", "--budget-s", "5"]

if __name__ == "__main__":
    sys.argv = ["profile.py", *PRESET, *sys.argv[1:]]  # flags typed here come last, so they win
    runpy.run_path(str(ROOT / "profile.py"), run_name="__main__")
