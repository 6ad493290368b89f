"""The grammar: valid statements parse into the AST with positions; invalid ones give pointed messages."""

import pytest

from odinlab.lang import ast, parse
from odinlab.lang.errors import OdinSyntaxError


def test_a_statement_parses_into_frozen_nodes_with_positions():
    [statement] = parse("images where split = test | label errors of cnn@2 top 5 -> suspects")
    condition = statement.source.conditions[0]
    assert isinstance(condition, ast.Compare) and (condition.field.text, condition.op) == ("split", "=")
    assert (condition.value.value, condition.value.line, condition.value.column) == ("test", 1, 22)
    stage = statement.stages[0]
    assert (stage.verb, stage.model.text, stage.number, statement.bind) == ("label_errors", "cnn@2", 5, "suspects")
    assert (stage.model.line, stage.model.column, stage.model.end) == (1, 45, 50)
    with pytest.raises(AttributeError):
        stage.verb = "other"  # frozen


def test_keywords_are_case_insensitive():
    upper, lower = parse("IMAGES Where misclassified BY cnn")[0], parse("images where misclassified by cnn")[0]
    assert (upper.source, upper.stages) == (lower.source, lower.stages)


def test_one_statement_per_line_with_comments_and_continued_pipelines():
    text = "# the mistakes\nimages where misclassified by cnn  -- of the latest cnn\n  | show gallery\n\nmodels"
    statements = parse(text)
    assert [type(s.source).__name__ for s in statements] == ["Images", "Models"]
    assert statements[0].stages[0].verb == "show" and statements[0].stages[0].line == 3


@pytest.mark.parametrize("text, kind", [
    ("images where label in (3, 5)", ast.Within),
    ("images where loss of cnn > 2.5", ast.PredCompare),
    ("images where correct by cnn", ast.Misclassified),
    ("images where cnn@1 and cnn@2 disagree", ast.Disagree),
    ("images where cnn mistakes 3 for 8", ast.Mistakes),
    ("images where near boundary of cnn top 10", ast.NearBoundary),
    ("models where name like 'cnn*'", ast.Like),
    ("models where created after '2024-01-01'", ast.Created),
    ("models where descendants of cnn@1", ast.Lineage),
    ("models where has layer MaxPool2d", ast.HasLayer),
    ("models where more than 1000 parameters", ast.ParamCount),
])
def test_each_condition_parses_to_its_node(text, kind):
    assert isinstance(parse(text)[0].source.conditions[0], kind)


@pytest.mark.parametrize("text, verb", [
    ("materialize cnn layers head.fc1, features.relu2", "materialize"),
    ("attribute with cnn using saliency target label", "attribute"),
    ("compare cnn@1 with cnn@2 by agreement", "compare"),
    ("top 5 units of cnn at head.fc1 by ink", "top_units"),
    ("explain with cnn at head.fc1", "explain"),
    ("error clusters of cnn at head.fc1", "error_clusters"),
    ("label errors of cnn top 10", "label_errors"),
    ("sample 0.2 near boundary of cnn estimate units at head.fc1", "sample"),
    ("influence of cnn at head.fc2 on train top 3", "influence"),
    ("embed with cnn at head.fc1 using pca", "embed"),
    ("confusion of cnn", "confusion"),
    ("maximize cnn layer features.relu2 unit 5 steps 16", "maximize"),
    ("show compare of cnn@1 and cnn@2", "show"),
    ("export report 'out.html' for cnn@1 and cnn@2", "export"),
])
def test_each_verb_parses_to_a_stage(text, verb):
    assert parse(text)[0].stages[0].verb == verb


def test_use_help_and_sql_are_statements():
    use, path, helps, sql = parse("use store\nuse 'runs/store'\nhelp top\nsql \"select 1\"")
    assert (use.source.target, use.source.is_path, path.source.is_path) == ("store", False, True)
    assert (helps.source.topic, sql.source.query) == ("top", "select 1")


# Each invalid statement, and the exact message shown.
INVALID = [
    ("images where",
     "Syntax error on line 1: the line ends too early; expected a condition (a column name, misclassified by M, "
     "loss of M > x, ...).\n    images where\n                ^"),
    ("images wher split = test",
     "Syntax error on line 1: unexpected 'wher'; expected '->', 'limit', 'where', '|' or the end of the line."
     "\n    images wher split = test\n           ^^^^"),
    ("images where split = $",
     "Syntax error on line 1: unexpected '$'; expected a model (name@version), a name, a number or a "
     "quoted string.\n    images where split = $\n                         ^"),
    ("models\ntop units of cnn",
     "Syntax error on line 2: the line ends too early; expected 'at'.\n    top units of cnn\n                    ^"),
    ("images | show",
     "Syntax error on line 1: the line ends too early; expected a name.\n    images | show\n                 ^"),
]


@pytest.mark.parametrize("text, message", INVALID)
def test_a_syntax_error_points_at_the_token_and_says_what_was_expected(text, message):
    with pytest.raises(OdinSyntaxError) as caught:
        parse(text)
    assert str(caught.value) == message
