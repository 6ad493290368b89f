"""GradientStore: capture into the store, and every operator against torch.func per-sample gradients."""

import logging

import numpy as np
import polars as pl
import pytest
import torch
from test_gradients_kernels import conv_net, linear_net, reference

import odinlab
from odinlab.debug.gradients import GradientStore
from odinlab.errors import (
    FormError,
    LabelError,
    NotMaterializedError,
    OdinError,
    OptionError,
    QueryShapeError,
    TargetError,
    UnknownLayerError,
    UnsupportedLayerError,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

CONV_LAYERS = ["0", "2", "5"]


@pytest.fixture
def nets(tiny_store):
    torch.manual_seed(1)
    lin, conv = linear_net(), conv_net()
    tiny_store.register_model(lin, "lin", hyperparams={"lr": 0.5})
    tiny_store.register_model(conv, "conv")
    return tiny_store, lin, conv


def ref_grads(store, model, images, target=None):
    """{layer: (n, params)} from torch.func, for the store's pixels and labels of ``images``."""
    selection = store.select(images)
    param = next(model.parameters())
    x = torch.from_numpy(store.model_input(selection)).to(param.dtype)
    y = torch.as_tensor(selection.labels if target is None else np.full(len(selection), target))
    return reference(model, x, y)


def as_float64(store, model, model_id):
    """The module in float64, attached to its version (its weights' digest no longer matches)."""
    return store.load_weights(model.double(), model_id)


def matrix_close(got, want, tol):
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got)
    assert np.abs(got - want).max() <= tol * np.abs(want).max(), np.abs(got - want).max()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("form", ["auto", "compact", "full"])
def test_restore_matches_torch_func(nets, form, dtype):
    store, _, conv = nets
    conv = as_float64(store, conv, "conv@1") if dtype == "float64" else conv
    grads = GradientStore(store, "conv@1", CONV_LAYERS, form=form, dtype=dtype)
    report = grads.capture("train", batch_size=8, progress=False)
    assert report["computed"].to_list() == [20, 20, 20]
    ref = ref_grads(store, conv, "train")
    tol = 1e-10 if dtype == "float64" else 1e-5
    for layer in CONV_LAYERS:
        restored = grads.restore(layer, "train")
        flat = torch.cat([v.reshape(20, -1) for v in restored.values()], dim=1)
        matrix_close(flat.double().numpy(), ref[layer].double().numpy(), tol)
        one = grads.restore(layer, "img-03")
        assert one["weight"].shape == dict(conv.named_modules())[layer].weight.shape


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_norms_similarity_cosine(nets, dtype):
    store, lin, conv = nets
    for model, layers, mid in ((lin, ["1", "3"], "lin@1"), (conv, CONV_LAYERS, "conv@1")):
        model = as_float64(store, model, mid) if dtype == "float64" else model
        grads = GradientStore(store, mid, layers, dtype=dtype)
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
    assert top["image_id_b"].to_list() == want
    assert top["image_id_a"].to_list() == [i for i in store.select("val").ids for _ in range(5)]
    assert top.columns == ["image_id_a", "image_id_b", "rank", "score"]
    dots = grads.most_similar("val", "train", k=3, cosine=False)
    want = train_ids[np.argsort(-(a @ b.T), axis=1, kind="stable")[:, :3]].ravel().tolist()
    assert dots["image_id_b"].to_list() == want


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
    restored = {l: grads.restore(l, "img-07") for l in CONV_LAYERS}
    top = grads.most_similar(restored, "train", k=1)
    assert top.row(0)[:3] == ("query", "img-07", 1) and abs(top["score"][0] - 1) < 1e-5


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
    attrs = store.results.group("conv@1", "gradients", "5").attrs
    assert attrs["form"] == "compact" and attrs["full_bytes"] == 219 * 4
    sizes = grads.sizes()
    assert sizes.select("layer", "form", "images").rows() == [("0", "full", 20), ("5", "compact", 20)]
    both = sizes.filter(pl.col("layer") == "0").row(0, named=True)  # both forms of conv 0 are stored
    assert both["compact_disk_bytes"] > 0 and both["full_disk_bytes"] > 0
    assert both["full_over_compact"] == both["full_disk_bytes"] / both["compact_disk_bytes"]


def test_resume_computes_only_missing_rows(nets, caplog):
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
        with caplog.at_level(logging.INFO, logger="odinlab.debug.gradients"):
            third = grads.capture("train", batch_size=4)
        assert third["computed"].to_list() == [0, 0] and len(calls) == n_calls  # no forward at all
    finally:
        handle.remove()
    assert "nothing computed" in caplog.text
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
    with pytest.raises(OptionError, match="Unknown dtype 'float16'"):
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
    with pytest.raises(TargetError, match="Unknown target 'zebra'"):
        grads.influence(["img-00"], ["img-01"], target="zebra")
    with pytest.raises(TargetError, match="target has 2 values for 1 test images"):
        grads.influence(["img-00"], ["img-01"], target=[0, 1])
    with pytest.raises(OptionError, match="k must be a positive int"):
        grads.most_similar("img-00", "train", k=0)
    with pytest.raises(OptionError, match="batch_size must be a positive int"):
        grads.capture("train", batch_size=0)
    with pytest.raises(OptionError, match="lr has no value for checkpoint lin@1"):
        grads.influence(["img-00"], ["img-01"], lr={"lin@9": 1.0})


def test_results_carry_image_ids_in_order(nets):
    store, lin, _ = nets
    grads = GradientStore(store, lin, ["1", "3"])
    order = ["img-05", "img-02", "img-41", "img-05"]  # any order, repeats kept
    norms = grads.norms(order)
    assert norms.dims == ("image_id",) and norms.image_id.values.tolist() == order
    one_by_one = [float(grads.norms([i]).values[0]) for i in order]
    assert np.asarray(norms).tolist() == one_by_one
    assert float(norms.sel(image_id="img-41")) == one_by_one[2]
    sim = grads.similarity(order[:3], ["img-44", "img-40"])
    assert sim.dims == ("image_id_a", "image_id_b") and sim.shape == (3, 2)
    assert sim.image_id_a.values.tolist() == order[:3] and sim.image_id_b.values.tolist() == ["img-44", "img-40"]
    assert float(sim.sel(image_id_a="img-02", image_id_b="img-40")) == float(grads.similarity("img-02", "img-40")[0, 0])
    influence = grads.influence(["img-41", "img-40"], order[:3])
    assert influence.dims == ("image_id_a", "image_id_b")
    assert influence.image_id_a.values.tolist() == ["img-41", "img-40"]
    assert influence.image_id_b.values.tolist() == order[:3]
    query = {"3": torch.ones(3, 16)}
    scores = grads.scores(query, order)
    assert scores.image_id.values.tolist() == order and scores.values[0] == scores.values[3]
    top = grads.most_similar(["img-41", "img-40"], order[:3], k=2)
    assert top["image_id_a"].to_list() == ["img-41", "img-41", "img-40", "img-40"]
    assert set(top["image_id_b"]) <= set(order[:3]) and top["rank"].to_list() == [1, 2, 1, 2]
    assert odinlab.store.labelled.to_frame(norms).columns == ["image_id", "gradient_norm"]


def test_every_selection_form_gives_the_same_norms(nets):
    store, lin, _ = nets
    grads = GradientStore(store, lin, ["1", "3"])
    want = grads.norms("val")
    ids = store.select("val").ids
    forms = [ids, "SELECT image_id FROM images WHERE split = 'val'", store.select("val"),
             pl.col("split") == "val", pl.Series("image_id", ids), pl.DataFrame({"image_id": ids})]
    for images in forms:
        got = grads.norms(images)
        assert got.image_id.values.tolist() == ids, images
        assert np.array_equal(got.values, want.values), images
    empty = grads.norms(store.select("val")[:0])
    assert empty.shape == (0,) and grads.similarity(store.select("val")[:0], "val").shape == (0, 20)


def test_influence_against_the_prediction(nets):
    store, lin, _ = nets
    grads = GradientStore(store, lin, ["1", "3"])
    test = store.select("test")[:4]
    with torch.no_grad():
        predicted = lin.eval()(torch.from_numpy(store.model_input(test))).argmax(1).numpy()
    got = grads.influence(test, "train", target="prediction")
    assert np.array_equal(got.values, grads.influence(test, "train", target=predicted.tolist()).values)
    ref_test = reference(lin, torch.from_numpy(store.model_input(test)), torch.as_tensor(predicted))
    ref_train = ref_grads(store, lin, "train")
    want = sum(ref_test[l].double().numpy() @ ref_train[l].double().numpy().T for l in ("1", "3"))
    matrix_close(got, 0.5 * want, 1e-5)  # lin@1's hyperparams give lr 0.5


def test_restore_in_the_old_order_still_works(nets):
    store, lin, _ = nets
    grads = GradientStore(store, lin, ["3"])
    new = grads.restore("3", "img-01")
    with pytest.warns(DeprecationWarning, match=r"restore\(layer, images\)"):
        old = grads.restore("img-01", "3")
    assert all(torch.equal(new[k], old[k]) for k in new)


def test_a_read_only_store_reads_what_was_captured(nets):
    store, _, conv = nets
    grads = GradientStore(store, conv, CONV_LAYERS)
    grads.capture("val", progress=False)
    readonly = odinlab.open_store(store.url, mode="r")
    again = GradientStore(readonly, "conv@1", CONV_LAYERS)
    assert np.array_equal(again.norms("val").values, grads.norms("val").values)
    with pytest.raises(odinlab.errors.ReadOnlyStoreError):
        again.capture("train", progress=False)
