"""Speed of the GLFA layers and the encoder-decoder model, beside what they replace.

1. Local alignment (locally connected 2-D layer, one kernel per pixel): fmrivid's shifted-sum
   implementation (``GLFA.local_align``) vs the textbook ``torch.nn.functional.unfold`` version
   (``GLFA.local_align_unfold``, a (B, k*k, H*W) patch tensor); forward + backward, batch 64.
2. Global alignment: the parcel-by-parcel matrix of GLFA (P x P) vs the voxel-to-voxel matrix of
   pairwise cortical alignment (HW x HW) it replaces; parameters and forward + backward time.
3. The encoder-decoder model: one training step (forward + backward + AdamW) at the paper's scale
   (32 frames of 112x112 per sample, 4,609 voxels), on CPU and, when present, on CUDA.
4. GLFA end to end on planted 64x64 flat maps of 3 subjects (parcels permuted per subject): fit time
   and the held-out subject's fSC / ISC on test clips before and after.

Timings are the best of ``--repeats`` runs; ratios are printed side by side (no pass/fail).

Usage:  python benchmarks/align_encoder.py [--threads 1] [--repeats 3] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmrivid.decoders import align, encoder  # noqa: E402


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_local(repeats):
    print("\n1. locally connected layer, forward + backward, batch 64 (ms)")
    print(f"{'map':>8} {'k':>3} {'shifted-sum':>12} {'unfold':>10} {'ratio':>7} {'max |diff|':>11}")
    for size, k in ((64, 3), (128, 3), (128, 5), (256, 3)):
        m = align.GLFA(size, size, 8, k)
        torch.nn.init.normal_(m.local_weight)
        x = torch.randn(64, size, size)
        with torch.no_grad():
            diff = float((m.local_align(x) - m.local_align_unfold(x)).abs().max())

        def run(f):
            m.zero_grad()
            f(x).square().mean().backward()

        t_ours = best_of(lambda: run(m.local_align), repeats)
        t_ref = best_of(lambda: run(m.local_align_unfold), repeats)
        print(f"{size}x{size:<4} {k:>3} {1e3 * t_ours:12.1f} {1e3 * t_ref:10.1f} {t_ref / t_ours:6.1f}x {diff:11.1e}")


def bench_global(repeats):
    print("\n2. global alignment: parcel matrix (GLFA) vs voxel-to-voxel matrix, forward + backward, batch 64")
    print(f"{'map':>8} {'parcel':>6} {'params parcel':>14} {'params voxel':>13} {'ms parcel':>10} "
          f"{'ms voxel':>9} {'ratio':>7}")
    for size, parcel in ((32, 4), (64, 8)):
        m = align.GLFA(size, size, parcel, 3)
        dense = torch.nn.Parameter(torch.eye(size * size))
        x = torch.randn(64, size, size)

        def run_parcel():
            m.zero_grad()
            m.global_align(x).square().mean().backward()

        def run_dense():
            dense.grad = None
            (x.reshape(64, -1) @ dense).square().mean().backward()

        t_p, t_d = best_of(run_parcel, repeats), best_of(run_dense, repeats)
        print(f"{size}x{size:<4} {parcel:>6} {m.global_weight.numel():14,} {dense.numel():13,} "
              f"{1e3 * t_p:10.2f} {1e3 * t_d:9.2f} {t_d / t_p:6.1f}x")
    print("   (a 256x256 flat map would need a 65,536^2 voxel matrix: 4.3e9 parameters, 17 GB in float32)")


def bench_encoder(repeats):
    print("\n3. encoder-decoder, one training step at paper scale (32 x 112 x 112 frames, 4,609 voxels)")
    cfg = encoder.config({"chunk_frames": 32, "frame_size": 112})
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        batch = 4 if device == "cpu" else cfg["batch_size"]
        torch.manual_seed(0)
        model = encoder.EncoderDecoder(4609, cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randint(0, 256, (batch, 32, 112, 112, 3), dtype=torch.uint8, device=device)
        y = torch.randn(batch, 4609, device=device)

        def step():
            v, frame = model(x)
            target = x[:, 16].permute(0, 3, 1, 2).float() / 255
            loss = 0.5 * torch.nn.functional.mse_loss(v, y) + 0.5 * torch.nn.functional.mse_loss(frame, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()

        step()  # warm-up
        t = best_of(step, repeats)
        n_par = sum(p.numel() for p in model.parameters())
        print(f"   {device}: batch {batch}, {1e3 * t:.0f} ms/step, {batch / t:.1f} samples/s "
              f"({n_par:,} parameters)")


def planted(size=64, parcel=8, n=300, n_test=60, seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    d = 8
    patterns = np.stack([gaussian_filter(rng.normal(size=(size, size)), 3.0) for _ in range(d)])
    patterns /= patterns.std(axis=(1, 2), keepdims=True)
    feats = rng.normal(size=(n + n_test, d))
    Z = np.einsum("nd,dhw->nhw", feats, patterns)
    g = size // parcel
    ids = [f"c{i:04d}" for i in range(n + n_test)]
    out = {}
    for s in ("01", "02", "03"):
        perm = rng.permutation(g * g)
        P = Z.reshape(-1, g, parcel, g, parcel).transpose(0, 1, 3, 2, 4).reshape(-1, g * g, parcel, parcel)[:, perm]
        M = P.reshape(-1, g, g, parcel, parcel).transpose(0, 1, 3, 2, 4).reshape(-1, size, size)
        M = (M / M.std() + 0.5 * rng.normal(size=M.shape)).astype(np.float32)
        out[s] = {"train_maps": M[:n], "train_ids": ids[:n], "test_maps": M[n:], "test_ids": ids[n:]}
    return out


def bench_e2e():
    print("\n4. GLFA end to end: 3 subjects, 64x64 maps, 300 training + 60 test clips, 400 steps per stage")
    maps = planted()
    t0 = time.perf_counter()
    res = align.fit_align(maps, None, {"parcel_size": 8}, heldout="03", log=lambda m: None)
    t = time.perf_counter() - t0
    print(f"   fit time {t:.1f} s (both stages)")
    for row in res["table"]:
        if row["subject"] == "03" and row["metric"] in ("fsc", "isc"):
            print(f"   held-out sub-03 {row['metric']}: before {row['before']:.3f}  after {row['after']:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    bench_local(args.repeats)
    bench_global(args.repeats)
    bench_encoder(args.repeats)
    if not args.skip_e2e:
        bench_e2e()


if __name__ == "__main__":
    main()
