"""Write the walkthrough notebooks from the cells below (outputs are never committed).

    python notebooks/build.py      # rewrites notebooks/*.ipynb

The notebooks are run top to bottom by tests/test_notebooks.py (nbclient, no network).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    ("md", "# odinlab in five minutes\n\nThe built-in digits, a small CNN, its predictions and activations in a "
           "store, the explorer, a `%%odin` cell and a report. Everything runs offline on a laptop CPU."),
    ("code", "import polars as pl\nimport odinlab\nfrom odinlab.nets import SmallCNN\nfrom odinlab.training import fit\n\n"
             "store = odinlab.open_store('quickstart-store', mode='a', create=True)\n"
             "if store.images.height == 0:\n    store.ingest(odinlab.datasets.digits())\n"
             "store.sql('SELECT split, COUNT(*) AS n FROM images GROUP BY split ORDER BY split')"),
    ("md", "## A model version, trained and registered\n\n`fit` notes its training run; registering the model "
           "records it, with its images, as an experiment."),
    ("code", "net = SmallCNN(in_channels=1, num_classes=10)\nfit(net, store, 'train', epochs=8, progress=False)\n"
             "v1 = store.register_model(net, 'cnn', hyperparams={'epochs': 8})\n"
             "store.evaluate(net, 'val').select('experiment_id', 'model_id', 'accuracy')"),
    ("md", "## Predictions and activations, materialized once\n\nOne forward pass per batch for every layer asked for."),
    ("code", "store.materialize(v1, ['head.fc1'], images='test', progress=False)\n"
             "store.predictions(v1, 'test').select('image_id', 'label', 'predicted', 'confidence', 'correct').head()"),
    ("md", "## The explorer\n\nLasso a group of points, click a confusion cell, and open the tabs under the views: "
           "*Explain selection* says what the selected images share."),
    ("code", "explorer = odinlab.explore(store, v1, layer='head.fc1', images='test', color='correct')\nexplorer"),
    ("code", "explorer.select('NOT correct')\nexplorer.selected().select('image_id', 'label', 'predicted', 'loss').head()"),
    ("md", "## Asking in the odin language"),
    ("code", "%load_ext odinlab\n%odin use store"),
    ("code", "%%odin\nimages where split = test and misclassified by cnn | label errors of cnn top 10 | show table"),
    ("md", "## A report for a colleague\n\nOne HTML file that works offline."),
    ("code", "path = odinlab.report(store, [v1], path='quickstart-report.html', images='test')\npath"),
]

DEBUGGING = [
    ("md", "# A debugging session: planted label noise and a planted spurious cue\n\n"
           "`odinlab.datasets.shapes` draws coloured shapes and plants two bugs whose answer we know: 5% of the labels "
           "are flipped, and 90% of the circles carry a small white square in the top-left corner (the metadata column "
           "`source` says `archive` for them). In the test split the square appears on any class. We find both bugs "
           "with odinlab's tools, fix them, and compare the two versions."),
    ("code", "import numpy as np\nimport polars as pl\nimport odinlab\nfrom odinlab.debug import error_analysis as ea, compare\n"
             "from odinlab.debug.explain import explain\nfrom odinlab.nets import SmallCNN\nfrom odinlab.training import fit\n\n"
             "data = odinlab.datasets.shapes(n=3000, size=16, label_noise=0.05, spurious_class=0, spurious_rate=0.9,\n"
             "                               test_cue_rate=0.3, seed=0)\n"
             "store = odinlab.open_store('memory://debugging-session', create=True)\nstore.ingest(data)\n"
             "build = lambda: SmallCNN(in_channels=3, num_classes=5)\n"
             "train = lambda module, store, images: fit(module, store, images, epochs=20, lr=0.01, progress=False)"),
    ("md", "## 1. Held-out probabilities in one call\n\nA model is sure of the labels it trained on, wrong or not, so "
           "label quality is judged on probabilities from fold models that never saw the image."),
    ("code", "cv = store.cross_validate(build, 'train', folds=5, fit=train, progress=False)\nmodel = cv.model_id\ncv.folds"),
    ("md", "## 2. Suspected label errors"),
    ("code", "flipped = set(np.asarray(data.ids)[data.label_noise & (data.split == 'train')])\n"
             "suspects = ea.label_errors(store, model, 'train', k=len(flipped))\n"
             "print(f'precision at k={len(flipped)}:', round(len(set(suspects[\"image_id\"]) & flipped) / len(flipped), 3))\n"
             "ea.label_noise(store, model, 'train')"),
    ("md", "## 3. Error clusters on the test split"),
    ("code", "store.materialize(model, ['features.pool'], 'test', progress=False)\n"
             "clusters = ea.error_exemplars(store, model, 'features.pool', 'test')\n"
             "clusters.select('cluster', 'size', 'top_predicted_name', 'predicted_share', 'over_represented')"),
    ("md", "## 4. Explain the images wrongly called circles\n\nThe metadata and the attribution maps point at the cue."),
    ("code", "wrongly_circles = store.predictions(model, 'test').filter((pl.col('predicted') == 0) & ~pl.col('correct'))\n"
             "why = explain(store, model, wrongly_circles, 'test', region=data.cue_box)\n"
             "print(why)\nwhy.metadata.head(3)"),
    ("code", "why.attribution.select('set', 'n', 'share_inside', 'lift')   # share of attribution inside the cue's box"),
    ("md", "## 5. Review the labels (here: accept the suggestion for the flagged ones)\n\nIn a notebook you would use "
           "the *Review labels* tab of the explorer; every decision goes into the store beside the original labels."),
    ("code", "flagged = ea.label_errors(store, model, 'train').filter(pl.col('flagged'))\n"
             "store.correct_labels(flagged['image_id'], flagged['suggested'], action='accept', model=model,\n"
             "                     score=flagged['label_quality'].to_list(), method='self_confidence')\n"
             "store.label_set('reviewed').filter(pl.col('corrected')).height"),
    ("md", "## 6. Fix both bugs and compare\n\nRetrain on the reviewed labels, without the images from the archive "
           "(the source of the cue), and compare the two versions on the test split."),
    ("code", "fixed_images = store.select('train', labels='reviewed').where(pl.col('source') != 'archive')\n"
             "net = build()\ntrain(net, store, fixed_images)\n"
             "fixed = store.register_model(net, 'smallcnn', parent=model, description='reviewed labels, no archive images')\n"
             "store.materialize(fixed, images='test', progress=False)\n"
             "compare.agreement(store, model, fixed, 'test')"),
    ("code", "compare.class_deltas(store, model, fixed, 'test')"),
]

COMPARISON = [
    ("md", "# Comparing two model versions\n\nA CNN trained from scratch, and the same network fine-tuned with its "
           "convolutions frozen: where do they disagree, and which is right?"),
    ("code", "import odinlab\nfrom odinlab.debug import compare\nfrom odinlab.nets import SmallCNN\nfrom odinlab.training import fit\n\n"
             "store = odinlab.open_store('memory://model-comparison', create=True)\nstore.ingest(odinlab.datasets.digits())\n"
             "net = SmallCNN(in_channels=1, num_classes=10)\nfit(net, store, 'train', epochs=6, progress=False)\n"
             "v1 = store.register_model(net, 'cnn')\n"
             "tuned = store.load_weights(SmallCNN(in_channels=1, num_classes=10), v1)\ntuned.features.requires_grad_(False)\n"
             "fit(tuned, store, 'train', epochs=3, lr=0.003, seed=1, progress=False)\n"
             "v2 = store.register_model(tuned, 'cnn', parent=v1)\n"
             "for version in (v1, v2):\n    store.materialize(version, ['features.relu2', 'head.fc1'], 'test', progress=False)"),
    ("code", "compare.agreement(store, v1, v2, 'test')    # agreement, the paired 2x2 table and McNemar's test"),
    ("code", "compare.class_deltas(store, v1, v2, 'test')"),
    ("code", "compare.disagreements(store, v1, v2, 'test').head()"),
    ("code", "compare.cka_matrix(store, v1, v2, ['features.relu2', 'head.fc1'], ['features.relu2', 'head.fc1'], 'test')"),
    ("code", "compare.flips(store, v1, v2, 'head.fc1', 'test').head()   # flipped predictions and how far each image moved"),
    ("code", "from odinlab.widgets import CompareView\nCompareView(store, v1, v2, 'test', layer='head.fc1')"),
]

GRADIENTS = [
    ("md", "# Gradients and influence: which training images made this prediction?\n\nodinlab keeps per image and "
           "layer the layer input and the gradient at its output, from which the weight gradient is restored exactly; "
           "similarity and TracIn influence run on that compact form."),
    ("code", "import odinlab\nfrom odinlab.debug.gradients import GradientStore\nfrom odinlab.nets import SmallCNN\n"
             "from odinlab.training import fit\n\n"
             "store = odinlab.open_store('memory://gradients', create=True)\nstore.ingest(odinlab.datasets.digits())\n"
             "net = SmallCNN(in_channels=1, num_classes=10)\nfit(net, store, 'train', epochs=5, progress=False)\n"
             "v1 = store.register_model(net, 'cnn')\n"
             "grads = GradientStore(store, v1, ['head.fc1', 'head.fc2'])\ngrads.plan()"),
    ("code", "test = store.select('test')\ngrads.capture('train')\ngrads.capture(test[:50])\ngrads.sizes()"),
    ("code", "grads.norms('train')                               # one gradient norm per training image"),
    ("code", "grads.most_similar(test.ids[0], 'train', k=5)       # the training images closest in gradient"),
    ("code", "grads.influence(test[:10], 'train')                 # TracIn influence of every training image"),
]


def notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text)
                for kind, text in cells]
    return nb


NOTEBOOKS = {"quickstart": QUICKSTART, "debugging-session": DEBUGGING, "model-comparison": COMPARISON,
             "gradients-and-influence": GRADIENTS}

if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        nbformat.write(notebook(cells), HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")
