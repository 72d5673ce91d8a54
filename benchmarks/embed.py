"""Image embeddings and search: torchinfer's ``embed`` against a plain timm loop on the same
folder and model, side by side in one run; then the search over 10^4 and 10^6 vectors,
exact and approximate (HNSW, usearch), with the index's build time, memory and recall.

Embedding. Model: a timm folder (``save_for_hf``, random weights calibrated on photographs,
nothing downloaded; ``--arch``, default resnet10t). Pictures: ``--images`` JPEGs of 640x480 to
1280x960 cut from scikit-image's photographs (``model_sources.write_jpegs``). Contenders, each
reading the files itself:
  torchinfer   ``ti.load("embed", folder).stream(folder_of_jpegs, batch_size=B)``: timm's
               recipe, its classifier dropped, L2-normalised; auto's runtime by default
               (``--backend torch --precision fp32`` pins eager PyTorch in float32); its
               one-time measurement is before timing, and printed
  timm loop    ``create_transform(**resolve_data_config({}, model=model))``, a DataLoader over
               the files (PIL open, RGB, transform; 0 and 2 workers), batch B,
               ``forward_head(forward_features(x), pre_logits=True)``, ``F.normalize``
Warm-ups as in model_sources.py; ``--repeats`` interleaved rounds, the median and the ratio to
torchinfer. Agreement: the largest cosine distance between the two sides' vectors.

Search. ``--sizes`` vector counts of ``--dim`` dimensions, unit length, drawn around 1,000
random centres (real embeddings cluster; on vectors uniform on the sphere an HNSW graph needs
more search effort for the same recall). Queries: 1,000 other draws. Exact: one query at a
time and 100 at once; approximate: the index is built (threads: all cores), saved and
searched one query at a time; recall@10 against exact. Memory: the vectors, and the index's
file (what a server maps beside them).

    python benchmarks/embed.py [--images 64] [--batch 8] [--repeats 3] [--arch resnet10t]
                               [--backend auto|torch] [--precision auto|fp32]
                               [--sizes 10000,1000000] [--dim 128]
                               [--skip-embed] [--skip-search]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_sources as ms  # noqa: E402  (sets the offline hub variables first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torchinfer as ti  # noqa: E402
from torchinfer.runner.plan import PROBE_FULL, PROBE_SPLIT  # noqa: E402
from torchinfer.runtime.cpu import describe_cpu  # noqa: E402
from torchinfer.vectors.index import ann_index, ann_search, exact_search  # noqa: E402
from torchinfer.vectors.store import HEADER_BYTES, header  # noqa: E402


def embed_contenders(folder: Path, images: Path, paths: list[Path], bs: int, backend: str,
                     precision: str) -> list[ms.Contender]:
    t0 = time.perf_counter()
    p = ti.load("embed", str(folder), batch_size=bs, device="cpu", backend=backend,
                precision=precision)
    p.prepare()
    setup = time.perf_counter() - t0

    def ours(files: list[str] | str) -> dict[str, np.ndarray]:
        return {Path(r.source).name: r.vector for r in p.stream(files, batch_size=bs)}

    warm = [str(x) for x in ms.warm_set(paths, (PROBE_FULL + PROBE_SPLIT) * bs + 1)]
    contenders = [ms.Contender(f"torchinfer ({backend}: {ms.chosen(p, backend)})",
                               lambda: ours(str(images)), lambda: ours(warm), setup)]

    import timm
    from timm.data import create_transform, resolve_data_config

    t0 = time.perf_counter()
    model = timm.create_model("local-dir:" + str(folder), pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    timm_setup = time.perf_counter() - t0

    def loop(files: list[Path], workers: int) -> dict[str, np.ndarray]:
        loader = torch.utils.data.DataLoader(ms.Files(files, transform), batch_size=bs,
                                             num_workers=workers)
        names = iter(f.name for f in files)
        out: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for batch in loader:
                vectors = F.normalize(model.forward_head(model.forward_features(batch),
                                                         pre_logits=True), dim=1)
                for v in vectors.numpy():
                    out[next(names)] = v
        return out

    warm_files = ms.warm_set(paths, bs + 1)
    contenders += [ms.Contender(f"timm loop, DataLoader {w} workers", lambda w=w: loop(paths, w),
                                lambda w=w: loop(warm_files, w), timm_setup) for w in (0, 2)]
    return contenders


def bench_embed(args: argparse.Namespace, tmp: Path) -> None:
    images = tmp / "jpegs"
    paths = ms.write_jpegs(images, args.images)
    folder = ms.save_timm_folder(tmp / args.arch, args.arch)
    contenders = embed_contenders(folder, images, paths, args.batch, args.backend,
                                  args.precision)
    for c in contenders:
        c.warm()
    for r in range(args.repeats):
        for c in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
            t0 = time.perf_counter()
            c.answers = c.run()
            c.times.append(time.perf_counter() - t0)
    ours = contenders[0]
    ours_s = statistics.median(ours.times)
    print(f"\n{args.arch}, {len(paths)} JPEGs, batch {args.batch}, median of {args.repeats} "
          f"(torchinfer's one-time setup {ours.setup_s:.1f} s, not counted)")
    print(f"{'contender':44s} {'img/s':>8s} {'torchinfer is':>14s} {'max cosine distance':>20s}")
    for c in contenders:
        s = statistics.median(c.times)
        assert c.answers is not None and ours.answers is not None
        worst = max(float(1 - np.dot(ours.answers[k], c.answers[k])) for k in ours.answers)
        ratio = "" if c is ours else f"{s / ours_s:.2f}x"
        print(f"{c.name:44s} {len(paths) / s:8.1f} {ratio:>14s} {worst:20.2e}")


def clustered(n: int, dim: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        # each vector half as far from its centre as the centre is from the origin
        x = centres[rng.integers(0, len(centres), m)] + \
            0.5 * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def write_store(path: Path, vectors: np.ndarray) -> None:
    """The vectors as predict embed leaves them (``vectors.store``), written at once."""
    with open(path, "wb") as f:
        f.write(header(len(vectors), vectors.shape[1]))
        f.write(vectors.tobytes())


def bench_search(args: argparse.Namespace, tmp: Path) -> None:
    dim = args.dim
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = clustered(1000, dim, 99, centres)
    print(f"\nsearch: {dim}-d unit vectors around 1,000 centres; 1,000 queries; k = 10")
    print(f"{'vectors':>9s} {'method':>6s} {'build s':>8s} {'q/s (1 at a time)':>18s} "
          f"{'q/s (100 at once)':>18s} {'recall@10':>9s} {'vectors MB':>10s} {'index MB':>9s}")
    for n in args.sizes:
        vectors = clustered(n, dim, n, centres)
        path = tmp / f"v{n}.npy"
        write_store(path, vectors)
        stored = np.memmap(path, dtype="<f4", mode="r", offset=HEADER_BYTES, shape=(n, dim))
        one = queries[:50]
        t0 = time.perf_counter()
        exact_rows = [exact_search(stored, q[None], 10).rows[0] for q in one]
        single = len(one) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        batch = exact_search(stored, queries[:100], 10)
        many = 100 / (time.perf_counter() - t0)
        mb = vectors.nbytes / 1e6
        print(f"{n:9,d} {'exact':>6s} {'':>8s} {single:18.1f} {many:18.1f} {1.0:9.3f} {mb:10.1f}")
        t0 = time.perf_counter()
        index = ann_index(path, stored)
        build = time.perf_counter() - t0
        index_mb = Path(f"{path}.usearch").stat().st_size / 1e6
        t0 = time.perf_counter()
        approx = [ann_search(index, q[None], 10).rows[0] for q in queries]
        ann_qps = len(queries) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        ann_search(index, queries[:100], 10)
        ann_many = 100 / (time.perf_counter() - t0)
        truth = batch.rows.tolist() + exact_search(stored, queries[100:], 10).rows.tolist()
        recall = np.mean([len(set(a.tolist()) & set(t)) / 10 for a, t in zip(approx, truth)])
        print(f"{n:9,d} {'ann':>6s} {build:8.1f} {ann_qps:18.1f} {ann_many:18.1f} "
              f"{recall:9.4f} {mb:10.1f} {index_mb:9.1f}")
        assert [r.tolist() for r in exact_rows] == batch.rows[:len(one)].tolist()
        del stored, index
        for leftover in (path, Path(f"{path}.usearch"), Path(f"{path}.usearch.json")):
            leftover.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[10_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--skip-embed", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    print(describe_cpu(), f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_embed:
            bench_embed(args, Path(tmp))
        if not args.skip_search:
            bench_search(args, Path(tmp))


if __name__ == "__main__":
    main()
