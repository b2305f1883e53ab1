"""The search box's little language: weighted, negatable text terms.

    beach + 2:sunset - people      three terms; sunset counts twice, people pulls away
    a red bicycle leaning on a wall  one term (plain text is one term)

`+` and `-` are operators only at the start or after a space, so "t-shirt" is one word.
A weight is a number followed by a colon at the start of a term: `2:sunset`, `0.5:fog`.
"""

import re
from dataclasses import dataclass

from gallery.search.request import SearchError

MAX_QUERY_LENGTH = 1000
MAX_TERMS = 16
MAX_WEIGHT = 10.0
_OPERATOR = re.compile(r"(?:^|(?<=\s))([+-])")
_WEIGHT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*:(.*)$", re.DOTALL)

SYNTAX_HELP = (
    "Join terms with + and -, and weight a term with a number and a colon: "
    "beach + 2:sunset - people."
)


class QuerySyntaxError(SearchError):
    """A query the parser cannot read; the message is shown to the user."""

    def __init__(self, message: str):
        super().__init__("q", message)


@dataclass(frozen=True)
class Term:
    text: str
    weight: float  # negative for terms after '-'


def parse_query(query: str) -> list[Term]:
    """The weighted terms of a query; an empty or blank query has none."""
    if len(query) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(
            f"The query is {len(query):,} characters long; the limit is {MAX_QUERY_LENGTH:,}."
        )
    if not query.strip():
        return []
    pieces = _OPERATOR.split(query)
    # split() gives [before-first-operator, op, text, op, text, ...]
    terms = []
    leading = pieces[0]
    if leading.strip():
        terms.append(_term(leading, sign=1.0))
    for operator, text in zip(pieces[1::2], pieces[2::2], strict=True):
        sign = -1.0 if operator == "-" else 1.0
        if not text.strip():
            raise QuerySyntaxError(
                f"'{operator}' must be followed by words to search for. {SYNTAX_HELP}"
            )
        terms.append(_term(text, sign))
    if not terms:
        raise QuerySyntaxError(f"The query has no words to search for. {SYNTAX_HELP}")
    if len(terms) > MAX_TERMS:
        raise QuerySyntaxError(f"A query can combine at most {MAX_TERMS} terms.")
    return terms


def _term(text: str, sign: float) -> Term:
    weight = 1.0
    match = _WEIGHT.match(text)
    if match:
        weight = float(match.group(1))
        text = match.group(2)
        if not text.strip():
            raise QuerySyntaxError(f"The weight {match.group(1)} has no words after it.")
        if not 0 < weight <= MAX_WEIGHT:
            raise QuerySyntaxError(
                f"Weights must be above 0 and at most {MAX_WEIGHT:g}; got {match.group(1)}."
            )
    return Term(text=" ".join(text.split()), weight=sign * weight)
