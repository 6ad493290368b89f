"""Damage is detected, never read back as data: every damage raises CorruptStoreError and verify() reports it."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import save as save_safetensors
from torch import nn
from zarr.codecs import BloscCodec

import odinlab
from odinlab.cli import main
from odinlab.errors import CorruptStoreError
from odinlab.store.arrays import has_checksums, read_rows, write_rows
from odinlab.store.verify import verify

N = 200  # 3×32×32 uint8 images: 341 per pixel chunk, so 1 chunk; 3×64×64: 85 per chunk, 3 chunks
IDS = [f"img-{i:03d}" for i in range(N)]


def _net():
    torch.manual_seed(0)
    # A wide first map (8×64×64 float16 = 64 KiB per image) gives 16 images per activation chunk.
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3))


@pytest.fixture
def damaged(tmp_path):
    """A local store with 3 pixel chunks, one model and the activations of its ReLU for every image."""
    store = odinlab.open_store(tmp_path / "store", create=True)
    pixels = np.random.default_rng(0).integers(0, 256, (N, 3, 64, 64), dtype=np.uint8)
    store.ingest(pixels, labels=np.arange(N) % 3, classes=["a", "b", "c"], split="train", ids=IDS)
    net = _net()
    store.register_model(net, "wide")
    store.materialize(net, ["1"], progress=False)
    assert verify(store).is_empty()
    return store, net, tmp_path / "store"


def _chunk(root: Path, array: str, index: int) -> Path:
    path = root / "arrays" / array / "c" / str(index)
    while path.is_dir():  # the remaining axes are one chunk each: c/<i>/0/0/0
        path = path / "0"
    return path


def _fresh(path):
    return odinlab.open_store(path, mode="r")


def _only_problem(store, what):
    problems = verify(store)
    assert problems.height >= 1 and set(problems["what"]) == {what}, problems
    return problems.row(0, named=True)


# -- pixels ---------------------------------------------------------------------------------

def test_a_deleted_pixel_chunk_is_damage_not_zeros(damaged):
    _, _, root = damaged
    _chunk(root, "images/pixels", 1).unlink()
    store = _fresh(root)
    assert store.pixels(IDS[:5]).shape == (5, 3, 64, 64)  # chunk 0 is intact
    with pytest.raises(CorruptStoreError, match=r"Chunk 1 of array 'images/pixels' \(rows 85\.\.169.*missing"):
        store.pixels(IDS[90:95])
    problem = _only_problem(store, "chunk")
    assert problem["where"] == "arrays/images/pixels/c/1/0/0/0" and "missing" in problem["error"]
    assert problem["images"] == IDS[85:170]


def test_a_truncated_pixel_chunk_raises_instead_of_crashing(damaged):
    _, _, root = damaged
    chunk = _chunk(root, "images/pixels", 0)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    # In a child process: a decoder crash (SIGSEGV) must fail this test, not kill pytest.
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import odinlab
        from odinlab.errors import CorruptStoreError
        store = odinlab.open_store({str(root)!r}, mode="r")
        for _ in range(3):  # the same error every time, never bytes that change between reads
            try:
                store.pixels(["img-000"])
            except CorruptStoreError as error:
                print(error)
            else:
                print("read garbage")
    """)], capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert len(lines) == 3 and all("Chunk 0 of array 'images/pixels'" in line and "damaged" in line for line in lines)
    assert "checksum" in _only_problem(_fresh(root), "chunk")["error"]


def test_altered_bytes_in_a_pixel_chunk_fail_the_checksum(damaged):
    _, _, root = damaged
    chunk = _chunk(root, "images/pixels", 2)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    store = _fresh(root)
    with pytest.raises(CorruptStoreError, match="Chunk 2 of array 'images/pixels'.*checksum"):
        store.pixels()
    problem = _only_problem(store, "chunk")
    assert problem["where"].endswith("c/2/0/0/0") and problem["images"] == IDS[170:]


def test_a_missing_chunk_names_the_images_it_holds():
    array = zarr.create_array(zarr.storage.MemoryStore(), shape=(6, 2), chunks=(3, 2), dtype="f4",
                              compressors=odinlab.store.arrays.COMPRESSOR)
    write_rows(array, np.arange(6), np.zeros((6, 2), np.float32))  # zeros are stored too
    zarr.core.sync.sync(array.store.delete("c/1/0"))
    with pytest.raises(CorruptStoreError, match=r"Chunk 1 .*rows 3\.\.5; images d, f\) is missing") as caught:
        read_rows(array, np.array([5, 0, 3]), ids=["f", "a", "d"])
    assert caught.value.chunks == [1] and caught.value.images == ["d", "f"]
    assert read_rows(array, np.array([0, 1])).tolist() == [[0, 0], [0, 0]]  # the intact chunk still reads


# -- activations ----------------------------------------------------------------------------

def test_a_deleted_activation_chunk_of_done_rows_is_damage(damaged):
    _, _, root = damaged
    values = "models/wide/v1/layers/1/float16/values"
    _chunk(root, values, 3).unlink()  # rows 48..63
    store = _fresh(root)
    assert store.activations("wide@1", "1", IDS[:16]).shape == (16, 8, 64, 64)
    with pytest.raises(CorruptStoreError, match=rf"Chunk 3 of array '{values}' \(rows 48\.\.63.*missing"):
        store.activations("wide@1", "1", IDS[50:52])
    problem = _only_problem(store, "chunk")
    assert problem["where"] == f"arrays/{values}/c/3/0/0/0" and problem["images"] == IDS[48:64]


def test_missing_chunks_of_rows_not_done_are_not_damage(tmp_path):
    root = zarr.open_group(zarr.storage.LocalStore(tmp_path), mode="a")
    target = odinlab.store.arrays.ArraySpec("a", (2,), "float32").open(root, capacity=10)
    target.write(np.array([0, 1]), np.zeros((2, 2), np.float32))
    assert has_checksums(target.values)
    # Rows 2..9 were never done: their (absent) chunks read as fill, as the done mask says.
    assert target.done_rows(np.arange(10)).sum() == 2
    assert target.read(np.array([0, 1])).tolist() == [[0, 0], [0, 0]]


# -- weights --------------------------------------------------------------------------------

def _weights_file(store, model_id="wide@1") -> tuple[Path, str]:
    manifest = json.loads((Path(store.url) / "models" / "wide" / "v1.json").read_text())
    digest = manifest["tensors"]["0.weight"]["digest"]
    return Path(store.url) / "weights" / digest[:2] / f"{digest}.safetensors", digest


def test_a_tampered_weights_file_is_refused_naming_the_file_and_version(damaged):
    store, _, root = damaged
    path, digest = _weights_file(store)
    path.write_bytes(save_safetensors({"tensor": torch.zeros(8, 3, 3, 3)}))  # valid, other values
    with pytest.raises(CorruptStoreError, match=rf"weights/{digest[:2]}/{digest}.safetensors of wide@1 holds other"):
        _fresh(root).load_weights(_net(), "wide@1")
    problem = _only_problem(_fresh(root), "weights")
    assert digest in problem["where"] and "wide@1" in problem["error"]


def test_a_broken_weights_file_names_the_file(damaged):
    store, _, root = damaged
    path, digest = _weights_file(store)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptStoreError, match=rf"{digest}.safetensors of wide@1 is not a readable safetensors"):
        _fresh(root).load_weights(_net(), "wide@1")
    assert "not a readable" in _only_problem(_fresh(root), "weights")["error"]


def test_a_damaged_manifest_and_table_are_reported(damaged):
    _, _, root = damaged
    (root / "models" / "wide" / "v1.json").write_text("{not json")
    (root / "tables" / "models.parquet").write_bytes(b"PAR1 broken")
    problems = verify(_fresh(root))
    assert set(problems["what"]) == {"manifest", "table"}, problems


# -- the command and older stores -----------------------------------------------------------

def test_odinlab_verify_prints_the_damage_and_exits_non_zero(damaged, capsys):
    _, _, root = damaged
    assert main(["verify", str(root)]) == 0
    assert "healthy" in capsys.readouterr().out
    _chunk(root, "images/pixels", 1).unlink()
    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert "chunk arrays/images/pixels/c/1/0/0/0: missing" in out and "img-085" in out


def test_arrays_without_checksums_still_read_and_verify_checks_their_frames(tmp_path):
    """Stores written before checksums: chunks read, missing ones are fill, truncation is caught by verify."""
    store = odinlab.open_store(tmp_path / "old", create=True)
    group = store._backend.arrays()
    old = group.create_array("images/pixels", shape=(4, 1, 8, 8), chunks=(2, 1, 8, 8), dtype="uint8",
                             compressors=BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"))
    old[:] = np.arange(4 * 64, dtype=np.uint8).reshape(4, 1, 8, 8)
    assert not has_checksums(old)
    assert read_rows(old, np.array([3]))[0, 0, 0, :2].tolist() == [192, 193]
    chunk = _chunk(tmp_path / "old", "images/pixels", 1)
    chunk.write_bytes(chunk.read_bytes()[:20])
    problems = verify(store).filter(what="chunk")  # (no images table here: reported too)
    assert problems["where"].to_list() == ["arrays/images/pixels/c/1/0/0/0"]
    assert "truncated" in problems["error"][0]


def test_row_array_reads_stay_correct_for_all_zero_chunks(tmp_path):
    """A chunk equal to the fill value is written, so zeros are data and reading them is no false alarm."""
    store = odinlab.open_store(tmp_path / "zeros", create=True)
    store.ingest(np.zeros((5, 8, 8), np.uint8), ids=list("abcde"), labels=[0] * 5, classes=["x"])
    assert store.pixels().sum() == 0 and verify(store).is_empty()
