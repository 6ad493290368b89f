import json

import polars as pl

from odinlab.cli import main


def test_demo_builds_a_store_with_two_versions_lineage_and_experiments(tmp_path, capsys):
    assert main(["demo", "--store", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "digits-cnn@1" in out and "digits-cnn@2" in out and "Store path:" in out
    assert "misclassified" in out and "Test-set guard" in out
    report = tmp_path / "demo-report.html"
    assert f"Report: {report}" in out and "jupyter lab notebooks/quickstart.ipynb" in out
    html = report.read_text(encoding="utf-8")
    assert report.stat().st_size < 10e6 and "digits-cnn@2" in html and "<script src=" not in html

    import odinlab
    store = odinlab.open_store(tmp_path / "demo", mode="r")
    assert store.images.height == 1797
    assert store.models["parent"].to_list() == [None, "digits-cnn@1"]
    # v2 froze the conv layers, so it added fewer weight bytes than v1.
    new_bytes = store.models["new_weight_bytes"].to_list()
    assert new_bytes[1] < new_bytes[0]
    evals = store.experiments.filter(pl.col("kind") == "eval")
    assert evals.height == 4 and evals["accuracy"].min() > 0.9
    assert evals.filter(pl.col("test_reuse"))["model_id"].to_list() == ["digits-cnn@2"]
    stored = store.materialized()
    assert stored.height == 8 and set(stored["images"]) == {1797}  # predictions + 3 layers, both versions
    assert store.predictions("digits-cnn@2").height == 1797


def test_demo_replaces_its_earlier_store_but_not_other_folders(tmp_path, capsys):
    main(["demo", "--store", str(tmp_path / "demo")])
    assert main(["demo", "--store", str(tmp_path / "demo")]) == 0
    assert "Replacing the earlier demo store" in capsys.readouterr().out
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert main(["demo", "--store", str(tmp_path / "mine")]) == 2
    assert "not an odinlab store" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_info_prints_a_summary(tmp_path, capsys):
    main(["demo", "--store", str(tmp_path / "demo")])
    capsys.readouterr()
    assert main(["info", str(tmp_path / "demo")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 1797 and summary["models"] == ["digits-cnn@1", "digits-cnn@2"]
    assert main(["info", str(tmp_path / "nothing")]) == 2


def test_version_is_printed(capsys):
    import odinlab
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"odinlab {odinlab.__version__}"
    assert odinlab.__version__[0].isdigit()


def test_verify_reports_a_healthy_store_and_exits_non_zero_on_damage(tmp_path, capsys):
    import numpy as np

    import odinlab
    store = odinlab.open_store(tmp_path / "s", create=True)
    store.ingest(np.zeros((3, 8, 8), np.uint8) + np.arange(3, dtype=np.uint8)[:, None, None], labels=[0, 1, 0])
    assert main(["verify", str(tmp_path / "s")]) == 0
    assert "healthy" in capsys.readouterr().out
    (tmp_path / "s" / "arrays" / "images" / "pixels" / "c" / "0" / "0" / "0" / "0").write_bytes(b"xx")
    assert main(["verify", str(tmp_path / "s")]) == 1
    captured = capsys.readouterr()
    assert "chunk arrays/images/pixels/c/0/0/0/0:" in captured.out and "1 problems" in captured.err
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
