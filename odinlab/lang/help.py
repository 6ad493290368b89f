"""Help text of the ``%%odin`` language, per verb, with examples.

>>> "images where" in text("images")
True
"""

from __future__ import annotations

from odinlab.errors import closest, listing

TOPICS = {
    "images": ("images [where CONDITION [and CONDITION]...] [limit N]",
               "Images that meet every condition. Conditions: COLUMN = value (split, label, any metadata "
               "column; also != < <= > >= and COLUMN in (a, b)), prediction|confidence|margin|loss of MODEL "
               "OP value, misclassified by MODEL, correct by MODEL, MODEL and MODEL disagree, MODEL mistakes "
               "LABEL for PREDICTED (a confusion cell), near boundary of MODEL [top N].",
               ["images where split = test and misclassified by cnn",
                "images where cnn@1 and cnn@2 disagree",
                "images where cnn mistakes 3 for 8 and ink > 0.3",
                "images where split = test and near boundary of cnn top 20"]),
    "models": ("models [where CONDITION [and CONDITION]...]",
               "Model versions (with their latest metrics). Conditions: name like 'pattern*', version = N, any "
               "column or metric OP value, created after|before 'YYYY-MM-DD', ancestors|descendants of MODEL, "
               "has layer TYPE, more|fewer than N parameters.",
               ["models where name like 'cnn*' and has layer MaxPool2d",
                "models where descendants of cnn@1 and accuracy > 0.9",
                "models where more than 10000 parameters"]),
    "experiments": ("experiments [where COLUMN OP value ...]", "Recorded experiments (training runs, evaluations).",
                    ["experiments where model_id = cnn@2"]),
    "sql": ("sql \"QUERY\"", "Plain SQL over the store's tables (images, models, experiments...).",
            ["sql \"select split, count(*) as n from images group by split\""]),
    "materialize": ("materialize MODEL [layers LAYER, ...]", "Store predictions (and activations) for the images.",
                    ["images where split = test | materialize cnn layers head.fc1"]),
    "attribute": ("attribute with MODEL [using METHOD] [target label|prediction|CLASS]",
                  "Attribution maps of the images (Captum methods).",
                  ["images where misclassified by cnn limit 8 | attribute with cnn using saliency"]),
    "maximize": ("maximize MODEL (class C | layer LAYER unit N) [steps N]",
                 "Activation maximization: the image that most excites a class or a unit.",
                 ["maximize cnn class 3", "maximize cnn layer features.relu2 unit 5 steps 64"]),
    "compare": ("compare MODEL with MODEL [by deltas|agreement|disagreements|paired]",
                "Compare two versions on the images.", ["images where split = test | compare cnn@1 with cnn@2"]),
    "top": ("top [N] units of MODEL at LAYER [by COLUMN]", "The units that best tell apart a label or metadata "
            "column.", ["images where split = test | top 5 units of cnn at head.fc1 by label"]),
    "explain": ("explain with MODEL [at LAYER]", "What the images share, against the rest (the explorer's "
                "explanation).", ["images where cnn mistakes 3 for 8 | explain with cnn"]),
    "error": ("error clusters of MODEL at LAYER", "The model's mistakes, clustered in a layer's space.",
              ["images where split = test | error clusters of cnn at head.fc1"]),
    "label": ("label errors of MODEL [top N]", "Images by label quality, most suspect first.",
              ["images where split = test | label errors of cnn top 20"]),
    "sample": ("sample SIZE near boundary of MODEL [estimate accuracy|confusion|units|means [at LAYER]]",
               "A sample weighted towards the decision boundary (SIZE: a share or a count) and an estimate "
               "from it with error bars.", ["images where split = test | sample 0.2 near boundary of cnn"]),
    "influence": ("influence of MODEL at LAYER [on SPLIT] [top N]", "The training images most similar in "
                  "gradient to each image.", ["images where misclassified by cnn limit 3 | influence of cnn at "
                                              "head.fc2 top 5"]),
    "embed": ("embed with MODEL at LAYER [using umap|pca]", "2-D coordinates of the images in a layer's space.",
              ["images where split = test | embed with cnn at head.fc1 using pca"]),
    "confusion": ("confusion of MODEL", "The confusion matrix cells with their images.",
                  ["images where split = test | confusion of cnn"]),
    "show": ("show table|explore|gallery|confusion|compare|units [of MODEL [and MODEL]] [at LAYER]",
             "Show the result as a table or in a widget (models and layer default to those named before).",
             ["images where split = test | show explore of cnn at head.fc1",
              "images where misclassified by cnn | show gallery"]),
    "export": ("export report 'PATH.html' [for MODEL [and MODEL]]", "A standalone HTML report of the images.",
               ["images where split = test | export report 'cnn.html' for cnn"]),
    "use": ("use 'PATH' | use VARIABLE", "Choose the store (a path, or a variable holding a Store).",
            ["%odin use 'runs/store'", "%odin use store"]),
    "bind": ("STATEMENT -> NAME", "Bind the result to a Python variable.",
             ["images where misclassified by cnn -> mistakes"]),
}
ALIASES = {"units": "top", "errors": "label", "clusters": "error", "report": "export", "->": "bind",
           "where": "images", "boundary": "sample", "select": "images"}


def text(topic: str | None = None) -> str:
    """Help for one verb (with examples), or an overview of the language."""
    if topic is None:
        return overview()
    key = ALIASES.get(topic.lower(), topic.lower())
    if key not in TOPICS:
        return f"No help for {topic!r}.{closest(topic, TOPICS)} Topics: {listing(TOPICS)}."
    syntax, what, examples = TOPICS[key]
    return f"{syntax}\n  {what}\nExamples:\n" + "\n".join(f"  {e}" for e in examples)


def overview() -> str:
    """Every statement's syntax, one per line."""
    lines = ["%%odin: one statement per line; stages joined by |; -> NAME binds the result; # or -- comments.",
             "Models are name@version (name alone: the latest). Help on one verb: %odin help VERB.", ""]
    lines += [f"  {syntax}" for syntax, _, _ in TOPICS.values()]
    return "\n".join(lines)
