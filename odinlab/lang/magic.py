"""The ``%%odin`` cell magic and ``%odin`` line magic: parse, run, display. Thin by design.

``%load_ext odinlab`` registers them. A user's mistake becomes IPython's ``UsageError``: one red
message with the line and a caret, never a traceback.

>>> from IPython.core.interactiveshell import InteractiveShell
>>> shell = InteractiveShell.instance()
>>> shell.user_ns["store"] = store
>>> load_ipython_extension(shell)
>>> _ = shell.run_line_magic("odin", "use store")
>>> len(shell.run_cell_magic("odin", "", "images where split = test"))
270
"""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from odinlab.lang import ast, help as help_text
from odinlab.lang.errors import OdinLanguageError
from odinlab.lang.run import Runner


@magics_class
class OdinMagics(Magics):
    """The ``odin`` magics of one IPython shell; the store chosen with ``use`` is kept between cells."""

    def __init__(self, shell):
        super().__init__(shell)
        self.runner = Runner(namespace=shell.user_ns)

    @line_magic("odin")
    def odin_line(self, line: str):
        return self._run(line)

    @cell_magic("odin")
    def odin_cell(self, line: str, cell: str):
        return self._run(cell if not line.strip() else line + "\n" + cell)

    def _run(self, text: str):
        try:
            statements, results = self.runner.statements_and_results(text)
        except OdinLanguageError as error:
            raise UsageError(str(error)) from None
        for statement, result in zip(statements, results, strict=True):
            if isinstance(statement.source, ast.Help):
                print(result)  # help is text to read, not a value
            elif statement is statements[-1]:
                return result if _shown(statement) else None
            elif _shown(statement):
                display(result)
        return None


def _shown(statement) -> bool:
    """A bound result is not displayed (like an assignment), unless the statement asks to show it."""
    return statement.bind is None or any(getattr(s, "verb", None) == "show" for s in statement.stages)


OdinMagics.odin_cell.__doc__ = OdinMagics.odin_line.__doc__ = help_text.overview()


def load_ipython_extension(ipython) -> None:
    """Register ``%%odin`` and ``%odin`` in ``ipython`` (what ``%load_ext odinlab`` calls)."""
    ipython.register_magics(OdinMagics)
