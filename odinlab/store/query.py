"""SQL over the store's tables, and nothing else.

polars' SQL can read any file the process can read through table functions
(``read_csv('/etc/passwd')``, ``read_parquet(...)``), also when quoted or behind a comment.
A store's SQL is a question about the store, so those are refused before anything runs, and
errors that depend on values (a failed cast names the value) never repeat data.
"""

from __future__ import annotations

import re

import polars as pl

from odinlab.errors import QueryError, UnknownTableError, closest, listing

# Comments and string literals are removed before looking for table functions, so that
# neither hides one ('read_csv' in a string is data; read_csv /* x */ (...) is a call).
_COMMENTS_AND_STRINGS = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'", re.S)
_TABLE_FUNCTION = re.compile(r"\bread_\w*\s*\(", re.I)
_QUERY_START = re.compile(r"^\s*\(*\s*(select|with)\b", re.I)


def looks_like_query(text: str) -> bool:
    """True for text that starts like a SQL query (``SELECT ...`` or ``WITH ...``).

    >>> looks_like_query("SELECT image_id FROM images"), looks_like_query("digits-0001")
    (True, False)
    """
    return bool(_QUERY_START.match(text))


def check_query(query: str) -> None:
    """Refuse SQL that would read outside the store (table functions, files).

    >>> check_query("SELECT * FROM images")
    >>> check_query("SELECT * FROM \\"read_csv\\"('/etc/passwd')")
    Traceback (most recent call last):
    odinlab.errors.QueryError: SQL over a store reads only its tables (...); table functions such as read_csv(...) are refused.
    """
    if not isinstance(query, str):
        raise QueryError(f"SQL must be text, not {type(query).__name__}.")
    bare = _COMMENTS_AND_STRINGS.sub(" ", query).replace('"', "").replace("`", "")
    if _TABLE_FUNCTION.search(bare):
        raise QueryError(f"SQL over a store reads only its tables ({listing(TABLES)}); table functions such as "
                         "read_csv(...) are refused.")


def run(frames: dict[str, pl.DataFrame], query: str) -> pl.DataFrame:
    """Run ``query`` over ``frames`` (the store's tables) after :func:`check_query`."""
    check_query(query)
    with pl.SQLContext(frames, eager=True) as context:
        try:
            return context.execute(query)
        except pl.exceptions.SQLInterfaceError as error:
            missing = re.search(r"relation '([^']+)' (?:was not found|not found)", str(error))
            if missing is None:
                raise QueryError(f"The SQL could not run: {_first_line(error)}") from None
            table = missing.group(1)
            raise UnknownTableError(f"No table {table!r} in the store.{closest(table, TABLES)} "
                                    f"Tables: {listing(TABLES)}.") from None
        except pl.exceptions.SQLSyntaxError as error:
            raise QueryError(f"The SQL has a syntax error: {_first_line(error)}") from None
        except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError,
                pl.exceptions.ColumnNotFoundError, pl.exceptions.SchemaError) as error:
            # Value-dependent messages can quote data; name the kind of failure only.
            raise QueryError(f"The SQL could not run ({type(error).__name__}); check its columns and types "
                             f"against the tables' schemas (store.sql('SHOW TABLES')).") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


TABLES = ("images", "models", "experiments", "image_sets", "label_corrections", "predictions")
