"""Tests of :mod:`pcad.distributed` and of data-parallel training under ``torchrun``.

The arithmetic (``block_range`` / ``shard`` / ``batch_slice``) and the world-of-one identities
run in this process. The real tests start two CPU processes with ``torchrun`` on loopback
(gloo): a script exercising the collectives (uneven lengths, dtype mismatch, broadcast, mean),
``CFMDetector.fit_features`` with uneven and one-item batches, ``btf`` and the error of a
detector without distributed support; and ``torchrun -m pcad train --detector cfm`` compared
with a one-process run of the same config (weights, predictions, run files). Each process
uses one thread (two busy cores).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pcad import distributed as dist
from pcad.data import MVTec3DDataset
from pcad.detectors import create_detector, load_detector
from pcad.distributed import block_range
from pcad.engine import train
from pcad.errors import InvalidInputError

CATEGORY = "plate_holes"
TORCHRUN_TIMEOUT = 240
#: the environment torchrun gives its workers; removed for the one-process runs
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
            "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _gloo() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


needs_torchrun = pytest.mark.skipif(not _gloo(), reason="torch.distributed with gloo is not "
                                    "available in this torch build (torchrun tests need it)")


def torchrun_cmd() -> list[str]:
    """``torchrun`` next to this interpreter (the venv's), else ``python -m
    torch.distributed.run`` (the same launcher)."""
    exe = Path(sys.executable).parent / "torchrun"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PCAD_DIST_BACKEND="gloo")
    return env


def run_torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [*torchrun_cmd(), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=worker_env(), capture_output=True, text=True,
                          timeout=TORCHRUN_TIMEOUT)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


# one torch thread per module (a busy 2-core machine; see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def world_of_one(monkeypatch):
    """No torchrun environment and no cached context."""
    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    dist._reset_for_tests()
    yield dist.get_context()
    dist._reset_for_tests()


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> Path:
    return tiny_dataset(tmp_path_factory, "dist_data", CATEGORY, train=4, test_good=1,
                        test_defect=2, defects=("dent", "hole"))


# ---------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_block_range_covers_every_item_once_in_rank_order(world):
    for n in range(0, 30):
        blocks = [block_range(n, r, world) for r in range(world)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        for (_, a1), (b0, _) in zip(blocks, blocks[1:], strict=False):
            assert a1 == b0  # contiguous, in rank order
        sizes = [b - a for a, b in blocks]
        assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)  # the larger blocks first
        seen = [i for a, b in blocks for i in range(a, b)]
        assert seen == list(range(n))


def test_block_range_examples_and_errors():
    assert [block_range(10, r, 4) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert [block_range(1, r, 2) for r in range(2)] == [(0, 1), (1, 1)]
    for n, rank, world, word in ((5, 2, 2, "rank"), (5, -1, 2, "rank"), (5, 0, 0, "world_size"),
                                 (-1, 0, 2, "n")):
        with pytest.raises(InvalidInputError, match=word):
            block_range(n, rank, world)


def test_batch_slices_of_every_rank_partition_the_batch(monkeypatch):
    """``batch_slice`` on each rank of a (faked) world of 3: the slices, concatenated in rank
    order, are the batch; the loss scales turn slice sums into the batch mean."""
    batch = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    parts = []
    for rank in range(3):
        monkeypatch.setattr(dist, "_CONTEXT",
                            dist.DistContext(rank, 3, rank, "gloo", torch.device("cpu")))
        parts.append(dist.batch_slice(batch))
        assert dist.shard(list(range(11))) == list(range(*block_range(11, rank, 3)))
        assert dist.slice_loss_scale(len(batch)) == pytest.approx(3 / 11)
    monkeypatch.setattr(dist, "_CONTEXT", None)
    assert [len(p) for p in parts] == [4, 4, 3]
    assert torch.equal(torch.cat(parts), batch)
    # sum over ranks of (slice sum * W / B), divided by W (DDP's average) == the batch mean
    loss = torch.rand(11, dtype=torch.float64)
    ddp = sum(loss[block_range(11, r, 3)[0]:block_range(11, r, 3)[1]].sum() * 3 / 11
              for r in range(3)) / 3
    assert float(ddp) == pytest.approx(float(loss.mean()), rel=1e-12)


# ------------------------------------------------------------------------- world of one


def test_world_of_one_is_the_identity(world_of_one):
    ctx = world_of_one
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend) == (0, 1, 0, None)
    assert dist.get_context() is ctx  # cached
    assert dist.is_main()
    assert not torch.distributed.is_initialized()
    dist.barrier()
    assert dist.shard_range(7) == (0, 7)
    assert dist.shard("abcde") == list("abcde")
    idx = torch.tensor([4, 1, 3])
    assert dist.batch_slice(idx) is idx
    assert dist.slice_loss_scale(4) == 0.25
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert dist.all_gather_arrays(x) is x
    obj = {"a": [1, 2]}
    assert dist.broadcast_object(obj) is obj
    assert dist.all_reduce_mean(2.5) == 2.5
    net = torch.nn.Linear(2, 3)
    assert dist.wrap_module(net) is net


def test_world_size_one_under_torchrun_needs_no_process_group(monkeypatch):
    for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(k, v)
    dist._reset_for_tests()
    try:
        assert dist.get_context().world_size == 1
        assert not torch.distributed.is_initialized()
    finally:
        dist._reset_for_tests()


def test_bad_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "two")
    dist._reset_for_tests()
    try:
        with pytest.raises(InvalidInputError, match="WORLD_SIZE"):
            dist.get_context()
    finally:
        dist._reset_for_tests()


def test_world_of_one_train_records_world_size(world_of_one, data, tmp_path):
    train(data, CATEGORY, "fpfh", tmp_path / "run", {"image_size": 64}, progress=False)
    assert json.loads((tmp_path / "run" / "train.json").read_text())["world_size"] == 1


# ------------------------------------------------------------------------------ torchrun

WORKER = textwrap.dedent('''
    """Run by torchrun (2 processes): collectives, cfm fit_features, btf, unsupported error."""
    import json
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    from pcad import distributed as dist
    from pcad.detectors import create_detector
    from pcad.detectors.base import Detector
    from pcad.detectors.registry import register_detector
    from pcad.engine import train
    from pcad.errors import InvalidInputError

    out, data, category = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    ctx = dist.get_context()
    rec = {"rank": ctx.rank, "world_size": ctx.world_size, "backend": ctx.backend,
           "same_context": dist.get_context() is ctx, "is_main": dist.is_main(),
           "shard": dist.shard(list(range(7))), "shard_range": list(dist.shard_range(5))}

    # different lengths per rank (rank r sends r + 2 rows), 3-d trailing shape, bool, empty
    x = (np.arange((ctx.rank + 2) * 6, dtype=np.float32).reshape(-1, 2, 3) + 1000 * ctx.rank)
    rec["gathered"] = dist.all_gather_arrays(x).tolist()
    rec["gathered_dtype"] = str(dist.all_gather_arrays(x).dtype)
    b = dist.all_gather_arrays(np.array([True, False, True])[: 2 * ctx.rank + 1])
    rec["gathered_bool"] = [b.dtype.str, b.tolist()]
    e = dist.all_gather_arrays(np.zeros((0 if ctx.rank == 0 else 2, 4), np.int64))
    rec["gathered_empty"] = list(e.shape)
    for name, bad in (("dtype", x.astype(np.float64) if ctx.rank else x),
                      ("shape", x.reshape(-1, 3, 2) if ctx.rank else x)):
        try:
            dist.all_gather_arrays(bad)
            rec[f"mismatch_{name}"] = None
        except InvalidInputError as exc:
            rec[f"mismatch_{name}"] = str(exc)
    rec["broadcast"] = dist.broadcast_object({"from": ctx.rank, "a": [1, 2]})
    rec["broadcast_src1"] = dist.broadcast_object(ctx.rank * 10, src=1)
    rec["mean"] = dist.all_reduce_mean(float(ctx.rank + 1))
    rec["slice"] = dist.batch_slice(torch.arange(5)).tolist()
    rec["wrapped"] = type(dist.wrap_module(torch.nn.Linear(2, 2))).__name__
    dist.barrier()

    # cfm's data-parallel steps on fixed features: uneven batches, and one-item batches (one
    # rank's slice empty at every step)
    rng = np.random.default_rng(0)
    rgb, pts = rng.normal(size=(37, 6)).astype(np.float32), rng.normal(size=(37, 5)).astype(
        np.float32)
    for bs in (7, 1):
        det = create_detector("cfm", image_size=64, epochs=2, batch_size=bs, hidden=8, device="cpu")
        det.fit_features(rgb, pts)
        torch.save({"f_2d3d": det.f_2d3d.state_dict(), "f_3d2d": det.f_3d2d.state_dict(),
                    "history": det.history}, out / f"cfm_bs{bs}_rank{ctx.rank}.pt")

    # a memory-bank detector: sharded features, the same bank on every rank
    det = train(data, category, "btf", out / "btf", {"image_size": 64}, progress=False)
    np.save(out / f"btf_bank_rank{ctx.rank}.npy", np.asarray(det.bank.features))

    @register_detector("no-dist-test")
    class NoDist(Detector):
        modalities = ("rgb",)

    try:
        train(data, category, "no-dist-test", out / "nodist", progress=False)
        rec["unsupported"] = None
    except InvalidInputError as exc:
        rec["unsupported"] = str(exc)
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(rec))
''')


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("dist_worker")
    script = out / "worker.py"
    script.write_text(WORKER)
    run_torchrun([str(script), str(out), str(data), CATEGORY], cwd=Path(__file__).parents[1])
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@needs_torchrun
def test_torchrun_context_and_collectives(worker_results):
    _, recs = worker_results
    for r, rec in enumerate(recs):
        assert (rec["rank"], rec["world_size"], rec["backend"]) == (r, 2, "gloo")
        assert rec["same_context"] and rec["is_main"] == (r == 0)
        assert rec["shard"] == [[0, 1, 2, 3], [4, 5, 6]][r]
        assert rec["shard_range"] == [[0, 3], [3, 5]][r]
        assert rec["slice"] == [[0, 1, 2], [3, 4]][r]
        assert rec["wrapped"] == "DistributedDataParallel"
    expected = np.concatenate([np.arange((r + 2) * 6, dtype=np.float32).reshape(-1, 2, 3)
                               + 1000 * r for r in range(2)])
    for rec in recs:  # every rank: all rows, rank order, dtype kept
        np.testing.assert_array_equal(np.array(rec["gathered"], np.float32), expected)
        assert rec["gathered_dtype"] == "float32"
        assert rec["gathered_bool"] == ["|b1", [True, True, False, True]]
        assert rec["gathered_empty"] == [2, 4]
        assert "dtype and trailing shape" in rec["mismatch_dtype"]
        assert "float64" in rec["mismatch_dtype"]
        assert "(3, 3, 2)" in rec["mismatch_shape"]
        assert rec["broadcast"] == {"from": 0, "a": [1, 2]}
        assert rec["broadcast_src1"] == 10
        assert rec["mean"] == pytest.approx(1.5)
        assert "does not support distributed training" in rec["unsupported"]
        assert "no-dist-test" in rec["unsupported"]


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@needs_torchrun
@pytest.mark.parametrize("bs", [7, 1])
def test_torchrun_cfm_steps_match_one_process(worker_results, bs):
    """37 patches in batches of 7 (slices 4 + 3, last batch 2) or of 1 (rank 1 idle at every
    step): the DDP fit equals the one-process fit, and both ranks hold the same weights."""
    out, _ = worker_results
    rng = np.random.default_rng(0)
    rgb, pts = rng.normal(size=(37, 6)).astype(np.float32), rng.normal(size=(37, 5)).astype(
        np.float32)
    ref = create_detector("cfm", image_size=64, epochs=2, batch_size=bs, hidden=8, device="cpu")
    ref.fit_features(rgb, pts)
    ranks = [torch.load(out / f"cfm_bs{bs}_rank{r}.pt", weights_only=True) for r in range(2)]
    for net in ("f_2d3d", "f_3d2d"):
        assert _max_diff(ranks[0][net], ranks[1][net]) == 0.0
        assert _max_diff(ranks[0][net], getattr(ref, net).state_dict()) < 1e-5
    np.testing.assert_allclose(ranks[0]["history"], ref.history, rtol=1e-5)


@needs_torchrun
def test_torchrun_btf_bank_matches_one_process(worker_results, data, world_of_one, tmp_path):
    out, _ = worker_results
    assert json.loads((out / "btf" / "train.json").read_text())["world_size"] == 2
    b0, b1 = (np.load(out / f"btf_bank_rank{r}.npy") for r in range(2))
    np.testing.assert_array_equal(b0, b1)
    ref = train(data, CATEGORY, "btf", tmp_path / "btf", {"image_size": 64}, progress=False)
    np.testing.assert_allclose(b0, np.asarray(ref.bank.features), rtol=1e-5, atol=1e-6)
    assert load_detector(out / "btf").bank.features.shape == b0.shape


def _uneven_batch_size(data: Path) -> tuple[int, int]:
    """``(n, batch)``: the number of foreground training patches and a batch size whose last
    batch is short and odd (so it splits unevenly over two ranks), as are the full ones."""
    from pcad.detectors.patches import foreground_patches

    n = sum(int(foreground_patches(s.xyz, 64, (8, 8)).sum())
            for s in MVTec3DDataset(data, CATEGORY, "train", modality="xyz"))
    for bs in range(25, n, 2):
        if (n % bs) % 2 == 1:
            return n, bs
    pytest.skip(f"no batch size splits {n} patches unevenly")  # pragma: no cover


@needs_torchrun
def test_torchrun_train_cfm_matches_one_process(data, world_of_one, tmp_path):
    n, bs = _uneven_batch_size(data)
    opts = ["-o", "image_size=64", "-o", "epochs=3", "-o", f"batch_size={bs}",
            "-o", "device=cpu"]
    run2 = tmp_path / "two"
    proc = run_torchrun(["-m", "pcad", "train", "--data", str(data), "--category", CATEGORY,
                         "--detector", "cfm", "--out", str(run2), "--quiet", *opts],
                        cwd=Path(__file__).parents[1])
    assert proc.stdout.count("run saved to") == 1  # rank 0 alone reports
    assert "by 2 processes" in proc.stdout

    config = {"image_size": 64, "epochs": 3, "batch_size": bs, "device": "cpu"}
    train(data, CATEGORY, "cfm", tmp_path / "one", config, progress=False)

    # the run is complete and says how it was made
    assert {p.name for p in run2.iterdir()} >= {"detector.json", "train.json", "cfm.pt"}
    rec = json.loads((run2 / "train.json").read_text())
    assert rec["world_size"] == 2 and rec["n_train"] == 4 and rec["detector"] == "cfm"
    saved = json.loads((run2 / "detector.json").read_text())
    assert saved["detector"] == "cfm" and saved["config"]["batch_size"] == bs

    two, one = load_detector(run2), load_detector(tmp_path / "one")
    w2, w1 = (torch.load(r / "cfm.pt", weights_only=True) for r in (run2, tmp_path / "one"))
    diffs = [_max_diff(w2[k], w1[k]) for k in ("f_2d3d", "f_3d2d", "stats")]
    print(f"cfm, {n} patches in batches of {bs}: max |2-process - 1-process| weight "
          f"difference {max(diffs):.3g}")
    assert max(diffs) < 1e-5, diffs
    np.testing.assert_allclose(two.history, one.history, rtol=1e-5)
    for s in MVTec3DDataset(data, CATEGORY, "test", modality="rgb+xyz"):
        (s2, m2), (s1, m1) = two.predict(s), one.predict(s)
        assert s2 == pytest.approx(s1, rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(m2, m1, rtol=1e-4, atol=1e-5)
    assert n > bs  # several steps, the last one short
