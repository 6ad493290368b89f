"""The magics in a real IPython shell: %load_ext odinlab, %odin use, %%odin cells, help, UsageError."""

import pytest
from IPython.core.interactiveshell import InteractiveShell

from odinlab.store import Selection


@pytest.fixture
def shell(lang_store):
    shell = InteractiveShell.instance()
    shell.user_ns["store"] = lang_store
    shell.run_cell("%load_ext odinlab", store_history=False)
    shell.run_cell("%odin use store", store_history=False)
    yield shell
    for name in ("mistakes", "versions"):
        shell.user_ns.pop(name, None)


def test_a_cell_binds_its_results_into_the_user_namespace(shell):
    result = shell.run_cell("%%odin\n# two statements\nimages where misclassified by cnn -> mistakes\n"
                            "models where descendants of cnn@1 -> versions")
    assert result.success
    assert isinstance(shell.user_ns["mistakes"], Selection)
    assert shell.user_ns["versions"]["model_id"].to_list() == ["cnn@2"]


def test_a_line_magic_returns_its_result(shell):
    result = shell.run_cell("%odin images where split = test and label = 3")
    assert result.success and len(result.result) == 28


def test_use_a_path_opens_that_store(shell, tmp_path):
    import odinlab

    odinlab.open_store(str(tmp_path / "s"), create=True).close()
    assert shell.run_cell(f"%odin use '{tmp_path / 's'}'").success
    assert shell.run_cell("%odin models").result.height == 0


def test_a_mistake_is_one_usage_error_with_a_caret_not_a_traceback(shell, capsys):
    result = shell.run_cell("%%odin\nimages where misclassified by cnm")
    assert not result.success
    out = capsys.readouterr()
    shown = out.out + out.err
    assert "UsageError: line 1: Unknown model 'cnm'. Did you mean: cnn, cnn@2, cnn@1?" in shown
    assert "    images where misclassified by cnm\n                                  ^^^" in shown
    assert "Traceback" not in shown


def test_a_syntax_error_is_a_usage_error_too(shell, capsys):
    assert not shell.run_cell("%odin images wher split = test").success
    shown = "".join(capsys.readouterr())
    assert "UsageError: Syntax error on line 1: unexpected 'wher'" in shown and "Traceback" not in shown


def test_help_prints_the_verb_with_examples(shell, capsys):
    shell.run_cell("%odin help label")
    shown = capsys.readouterr().out
    assert shown.startswith("label errors of MODEL [top N]") and "Examples:" in shown


def test_question_mark_shows_the_language_overview(shell, capsys):
    shell.run_cell("%%odin?")
    shown = "".join(capsys.readouterr())
    assert "images [where CONDITION [and CONDITION]...] [limit N]" in shown
