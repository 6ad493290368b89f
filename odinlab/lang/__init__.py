"""The ``%%odin`` query language: declarative questions over a store's images, models and experiments.

``parse`` turns text into an AST (:mod:`odinlab.lang.ast`); :class:`Runner` runs it through the
public API; :mod:`odinlab.lang.magic` wraps both as IPython magics (``%load_ext odinlab``).

>>> Runner(store).run("images where split = test and label = 3")[-1]
<Selection of 28 images ...>
"""

from odinlab.lang.errors import OdinLanguageError, OdinSyntaxError
from odinlab.lang.parser import parse
from odinlab.lang.run import Runner

__all__ = ["OdinLanguageError", "OdinSyntaxError", "Runner", "parse"]
