"""GradientStore: capture into the store, and every operator against torch.func per-sample gradients."""

import numpy as np
import polars as pl
import pytest
import torch
from test_gradients_kernels import conv_net, linear_net, reference

import odinlab
from odinlab.debug.gradients import (
    FormError,
    GradientStore,
    QueryShapeError,
    UnsupportedLayerError,
)
from odinlab.errors import (
    LabelError,
    NotMaterializedError,
    OdinError,
    UnknownLayerError,
)
from odinlab.store.pixels import to_model_input

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

CONV_LAYERS = ["0", "2", "5"]


@pytest.fixture
def nets(tiny_store):
    torch.manual_seed(1)
    lin, conv = linear_net(), conv_net()
    tiny_store.register_model(lin, "lin", hyperparams={"lr": 0.5})
    tiny_store.register_model(conv, "conv")
    return tiny_store, lin, conv  # the store keeps modules weakly: hold them here


def ref_grads(store, model, images, target=None):
    """{layer: (n, params)} from torch.func, for the store's pixels and labels of ``images``."""
    table = store.select(images)
    param = next(model.parameters())
    x = torch.from_numpy(to_model_input(store.pixels(table["image_id"]))).to(param.dtype)
    y = torch.as_tensor(table["label"].to_numpy().copy() if target is None else np.full(table.height, target))
    return reference(model, x, y)


def matrix_close(got, want, tol):
    want = np.asarray(want, dtype=np.float64)
    assert np.abs(np.asarray(got) - want).max() <= tol * np.abs(want).max(), np.abs(got - want).max()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("form", ["auto", "compact", "full"])
def test_restore_matches_torch_func(nets, form, dtype):
    store, _, conv = nets
    conv = conv.double() if dtype == "float64" else conv
    grads = GradientStore(store, conv, CONV_LAYERS, form, dtype=dtype, model_id="conv@1")
    report = grads.capture("train", batch_size=8, progress=False)
    assert report["computed"].to_list() == [20, 20, 20]
    ref = ref_grads(store, conv, "train")
    tol = 1e-10 if dtype == "float64" else 1e-5
    for layer in CONV_LAYERS:
        restored = grads.restore("train", layer)
        flat = torch.cat([v.reshape(20, -1) for v in restored.values()], dim=1)
        matrix_close(flat.double().numpy(), ref[layer].double().numpy(), tol)
        one = grads.restore("img-03", layer)
        assert one["weight"].shape == dict(conv.named_modules())[layer].weight.shape


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_norms_similarity_cosine(nets, dtype):
    store, lin, conv = nets
    for model, layers, mid in ((lin, ["1", "3"], "lin@1"), (conv, CONV_LAYERS, "conv@1")):
        model = model.double() if dtype == "float64" else model
        grads = GradientStore(store, model, layers, dtype=dtype, model_id=mid)
        grads.capture([f"img-{i:02d}" for i in range(40)], progress=False)
        tol = 1e-10 if dtype == "float64" else 1e-5
        a = torch.cat(list(ref_grads(store, model, "train").values()), dim=1).double().numpy()
        b = torch.cat(list(ref_grads(store, model, "val").values()), dim=1).double().numpy()
        matrix_close(grads.norms("train"), np.linalg.norm(a, axis=1), tol)
        matrix_close(grads.similarity("train", "val"), a @ b.T, tol)
        cos = (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)[None, :]
        matrix_close(grads.similarity("train", "val", cosine=True), cos, tol)
        last = layers[-1]
        only = ref_grads(store, model, "val")[last].double().numpy()
        matrix_close(grads.similarity("val", layers=last), only @ only.T, tol)


def test_most_similar_is_identical_to_torch_func_ranking(nets):
    store, _, conv = nets
    grads = GradientStore(store, conv, CONV_LAYERS)
    top = grads.most_similar("val", "train", k=5)  # captured on demand: the module is here
    a = torch.cat(list(ref_grads(store, conv, "val").values()), dim=1).double().numpy()
    b = torch.cat(list(ref_grads(store, conv, "train").values()), dim=1).double().numpy()
    cos = (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)[None, :]
    train_ids = store.select("train")["image_id"].to_numpy()
    want = train_ids[np.argsort(-cos, axis=1, kind="stable")[:, :5]].ravel().tolist()
    assert top["image_id"].to_list() == want
    assert top.columns == ["query_id", "rank", "image_id", "score"]
    dots = grads.most_similar("val", "train", k=3, cosine=False)
    want = train_ids[np.argsort(-(a @ b.T), axis=1, kind="stable")[:, :3]].ravel().tolist()
    assert dots["image_id"].to_list() == want


def test_influence_sums_checkpoints_of_a_lineage(nets):
    store, lin, _ = nets
    v1 = GradientStore(store, lin, ["1", "3"])
    v1.capture([f"img-{i:02d}" for i in range(20)] + ["img-45", "img-50"], progress=False)
    ref1 = ref_grads(store, lin, "train"), ref_grads(store, lin, ["img-45", "img-50"])
    lin2 = linear_net()
    lin2.load_state_dict(lin.state_dict())
    with torch.no_grad():
        lin2[3].weight.mul_(1.5)
    store.register_model(lin2, "lin", parent="lin@1", hyperparams={"lr": 0.1})
    v2 = GradientStore(store, lin2, ["1", "3"])
    v2.capture([f"img-{i:02d}" for i in range(20)] + ["img-45", "img-50"], progress=False)
    ref2 = ref_grads(store, lin2, "train"), ref_grads(store, lin2, ["img-45", "img-50"])

    def dots(ref, layers=("1", "3")):
        train, test = ref
        return sum(test[l].double().numpy() @ train[l].double().numpy().T for l in layers)

    got = v2.influence(["img-45", "img-50"], "train")  # both versions: lr 0.1 and 0.5 from hyperparams
    matrix_close(got, 0.1 * dots(ref2) + 0.5 * dots(ref1), 1e-5)
    only = v2.influence(["img-45", "img-50"], "train", checkpoints=["lin@2"], lr=1.0, layers="3")
    matrix_close(only, dots(ref2, ["3"]), 1e-5)
    # A given target instead of the label: test gradients computed in memory.
    against = v1.influence(["img-45", "img-50"], "train", checkpoints="lin@1", lr={"lin@1": 2.0}, target="b")
    test = ref_grads(store, lin, ["img-45", "img-50"], target=1)
    matrix_close(against, 2.0 * dots((ref1[0], test)), 1e-5)


def test_dense_query(nets):
    store, _, conv = nets
    grads = GradientStore(store, conv, CONV_LAYERS, form="compact")
    grads.capture("train", progress=False)
    rng = np.random.default_rng(0)
    query = {l: torch.from_numpy(rng.normal(size=dict(conv.named_modules())[l].weight.shape)).float()
             for l in CONV_LAYERS}
    ref = ref_grads(store, conv, "train")
    want = sum(ref[l][:, : query[l].numel()].double().numpy() @ query[l].reshape(-1).double().numpy()
               for l in CONV_LAYERS)
    matrix_close(grads.scores(query, "train"), want, 1e-5)
    # A restored gradient as the query: its best match is itself, with cosine 1.
    restored = {l: grads.restore("img-07", l) for l in CONV_LAYERS}
    top = grads.most_similar(restored, "train", k=1)
    assert top.row(0)[:3] == ("query", 1, "img-07") and abs(top["score"][0] - 1) < 1e-5


def test_plan_picks_the_smaller_form_and_records_it(nets):
    store, _, conv = nets
    grads = GradientStore(store, conv, ["0", "5"])
    plan = grads.plan()
    # conv 0: input 1×8×8 + output gradient 4×3×4 = 112 numbers, full 4·1·3·2 + 4 = 28: full wins.
    # Linear(72→3): 72 + 3 = 75 against 72·3 + 3 = 219: compact wins.
    assert plan.select("layer", "form").rows() == [("0", "full"), ("5", "compact")]
    assert plan["compact_bytes"].to_list() == [112 * 4, 75 * 4] and plan["full_bytes"].to_list() == [28 * 4, 219 * 4]
    forced = GradientStore(store, conv, ["0", "5"], form={"0": "compact"})
    assert forced.forms == {"0": "compact", "5": "compact"}
    assert GradientStore(store, conv, ["0", "5"], form="full").forms == {"0": "full", "5": "full"}
    grads.capture("train", progress=False)
    forced.capture("train", progress=False)
    attrs = store._backend.arrays()[odinlab.debug.gradients.gradients_path("conv@1", "5")].attrs
    assert attrs["form"] == "compact" and attrs["full_bytes"] == 219 * 4
    sizes = grads.sizes()
    assert sizes.select("layer", "form", "images").rows() == [("0", "full", 20), ("5", "compact", 20)]
    both = sizes.filter(pl.col("layer") == "0").row(0, named=True)  # both forms of conv 0 are stored
    assert both["compact_disk_bytes"] > 0 and both["full_disk_bytes"] > 0
    assert both["full_over_compact"] == both["full_disk_bytes"] / both["compact_disk_bytes"]


def test_resume_computes_only_missing_rows(nets, capsys):
    store, lin, _ = nets
    grads = GradientStore(store, lin, ["1", "3"])
    first = grads.capture([f"img-{i:02d}" for i in range(10)], batch_size=4, progress=False)
    assert first["computed"].to_list() == [10, 10]
    calls = []
    handle = lin.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        second = grads.capture("train", batch_size=4, progress=False)
        assert second.select("computed", "reused").rows() == [(10, 10), (10, 10)]
        n_calls = len(calls)
        third = grads.capture("train", batch_size=4)
        assert third["computed"].to_list() == [0, 0] and len(calls) == n_calls  # no forward at all
    finally:
        handle.remove()
    assert "nothing computed" in capsys.readouterr().out
    # A new layer later: only its arrays are filled.
    more = GradientStore(store, lin, ["3", "1"]).capture("train", progress=False)
    assert more["computed"].to_list() == [0, 0]


def test_reading_without_the_module(nets):
    store, _, conv = nets
    GradientStore(store, conv, CONV_LAYERS).capture("val", progress=False)
    reopened = odinlab.open_store(store.url)  # a new session: no modules, only data
    grads = GradientStore(reopened, "conv@1", CONV_LAYERS)
    ref = ref_grads(store, conv, "val")["5"].double().numpy()
    matrix_close(grads.similarity("val", layers="5"), ref @ ref.T, 1e-5)
    with pytest.raises(NotMaterializedError, match="not captured for 20 of these 20 images"):
        grads.norms("train")
    with pytest.raises(NotMaterializedError, match="No module for conv@1"):
        grads.capture("train")
    with pytest.raises(NotMaterializedError, match="No gradients of 3 of lin@1 are stored"):
        GradientStore(reopened, "lin@1", ["3"])


def test_bad_input_gets_clear_errors(nets):
    store, lin, _ = nets
    with pytest.raises(UnknownLayerError, match=r"Unknown layer 'fc9' of lin@1\..*Layers: 0, 1, 2, 3"):
        GradientStore(store, lin, ["fc9"])
    with pytest.raises(UnsupportedLayerError,
                       match=r"'2' of lin@1 is a ReLU.*Linear and nn.Conv2d.*Supported layers: 1, 3"):
        GradientStore(store, lin, ["2"])
    assert issubclass(UnsupportedLayerError, OdinError) and issubclass(UnsupportedLayerError, TypeError)
    with pytest.raises(FormError, match="Unknown form 'small' for 1"):
        GradientStore(store, lin, ["1"], form="small")
    with pytest.raises(ValueError, match="Unknown dtype 'float16'"):
        GradientStore(store, lin, ["1"], dtype="float16")
    store.ingest(np.zeros((2, 8, 8), np.uint8) + np.array([1, 2], np.uint8)[:, None, None],
                 split="unlabeled", ids=["u-0", "u-1"])
    grads = GradientStore(store, lin, ["1"])
    with pytest.raises(LabelError, match=r"2 of the 3 selected images have no label \(e.g. u-0, u-1\)"):
        grads.capture(["img-00", "u-0", "u-1"], progress=False)
    assert grads.capture(["img-00"], progress=False)["computed"].to_list() == [1]  # nothing half-written
    with pytest.raises(UnknownLayerError, match="'3' is not one of this GradientStore's layers: 1"):
        grads.similarity("train", layers=["3"])
    with pytest.raises(QueryShapeError, match=r"has shape \(3, 16\); the layer's weight has shape \(16, 64\)"):
        grads.scores({"1": torch.zeros(3, 16)}, ["img-00"])
    with pytest.raises(LabelError, match="Unknown target 'zebra'"):
        grads.influence(["img-00"], ["img-01"], target="zebra")
    with pytest.raises(ValueError, match="k must be a positive int"):
        grads.most_similar("img-00", "train", k=0)
