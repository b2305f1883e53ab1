"""Keyword search and its fusion with vector search: which mode a request runs in, the
tsquery its words ask for, and the statement of the `keyword` and `hybrid` modes (the
`semantic` statement is selector.py's own).

Every image has a stored full-text document, `gallery_image.search_document` (migration
0011): its caption and tags (weight A), the text read in it (B), its file name's words (C),
stemmed in English, plus the same words unstemmed for prefixes. `hybrid` fuses the vector
ranking and the keyword ranking by reciprocal rank fusion (Cormack et al. 2009):

    fused score = 1 / (RRF_K + semantic rank) + 1 / (RRF_K + keyword rank)

with a missing rank adding nothing, both rankings under the same filters and read to one
fixed depth (SEARCH_HYBRID_DEPTH), so that every page is a slice of one fused ranking. The
semantic ranking's rows come from selector.py (the same blocks a semantic search pages
through); the keyword ranking and the fusion are one statement.
"""

import re
from dataclasses import dataclass, field

from django.conf import settings

from gallery.search.query_syntax import Term
from gallery.search.request import MODES, SearchError, SearchRequest
from gallery.search.statements import tag_names_of

# The constant of reciprocal rank fusion; 60 is the value of the original paper and of
# pgvector-python's hybrid search example: it keeps a first rank from outweighing all else.
RRF_K = 60
# Letters and digits; everything else (punctuation, tsquery operators) separates words, so no
# input can be read as tsquery syntax.
WORD = re.compile(r"[^\W_]+")


def search_mode(request: SearchRequest) -> str:
    """The mode this request runs in: the one asked for, else `hybrid` when it has words and
    `semantic` when it has none (a query image or "more like this" alone)."""
    if request.mode and request.mode not in MODES:
        raise SearchError("mode", f"mode must be one of {', '.join(MODES)}.")
    has_words = bool(request.text.strip())
    if request.mode == "keyword":
        if not has_words:
            raise SearchError("mode", "A keyword search needs words to match: give q.")
        if request.image_vector is not None or request.like_image_id:
            raise SearchError(
                "mode",
                "A keyword search matches words only; use mode=hybrid or semantic with a "
                "query image.",
            )
        for parameter, marked in (("more", request.more_ids), ("less", request.less_ids)):
            if marked:
                # Feedback moves the query vector, which a keyword search has none of: said
                # plainly rather than ignored, so marks never seem to do nothing.
                raise SearchError(
                    parameter,
                    f"{parameter} (more like these / less like these) moves the query's "
                    "vector, which a keyword search does not use; unmark the images, or use "
                    "mode=hybrid or semantic.",
                )
        if request.min_score is not None:
            raise SearchError(
                "min_score",
                "min_score is a similarity to the query vector, which a keyword search does "
                "not use; leave it empty, or use mode=hybrid or semantic.",
            )
        return "keyword"
    if not has_words:
        return "semantic"
    return request.mode or "hybrid"


@dataclass
class KeywordQuery:
    """The words of a query as tsquery text: `include` (any of them matches), `exclude`
    (the words of `-` terms: a document with any is left out). The last word of each term
    is also a prefix (`bicy` finds "bicycle"), in `*_prefixes`, matched unstemmed."""

    words: list[str] = field(default_factory=list)  # the words to find, as typed (lowercase)
    include: list[str] = field(default_factory=list)
    include_prefixes: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    exclude_prefixes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.include)

    def sql(self) -> tuple[str, dict]:
        """A tsquery expression and its parameters; words are quoted lexemes, never syntax."""
        params = {
            "keyword_include": " | ".join(self.include),
            "keyword_include_prefixes": self.include_prefixes,
        }
        expression = f"({_any_of('keyword_include')})"
        if self.exclude:
            params["keyword_exclude"] = " | ".join(self.exclude)
            params["keyword_exclude_prefixes"] = self.exclude_prefixes
            expression += f" && !!({_any_of('keyword_exclude')})"
        return expression, params


def _any_of(parameter: str) -> str:
    # Prefixes are matched unstemmed, since a prefix can be longer than the word's stem
    # ("bicy" stems to "bici"); stop words are left out of them ("the" is no prefix of "then").
    return (
        f"to_tsquery('english', %({parameter})s) || to_tsquery('simple', coalesce(("
        f"SELECT string_agg(quote_literal(lower(word)) || ':*', ' | ') "
        f"FROM unnest(%({parameter}_prefixes)s::text[]) word "
        f"WHERE numnode(plainto_tsquery('english', word)) > 0), ''))"
    )


def keyword_query(terms: list[Term]) -> KeywordQuery:
    """The words of a parsed query (the search box's language: `-` terms exclude their
    words)."""
    query = KeywordQuery()
    for term in terms:
        words = [word.lower() for word in WORD.findall(term.text)]
        if not words:
            continue
        quoted = [f"'{word}'" for word in words[:-1]] + [f"'{words[-1]}':*"]
        if term.weight > 0:
            query.words += words
            query.include += quoted
            query.include_prefixes.append(words[-1])
        else:
            query.exclude += quoted
            query.exclude_prefixes.append(words[-1])
    return query


# -- the statement ---------------------------------------------------------------------------

# Every image but those whose file could not be read, whether or not it has a vector yet: a
# keyword search finds an upload by its caption before a worker has encoded it.
KEYWORD_RANKED = """
keyword_ranked AS (
    SELECT id, keyword_score, row_number() OVER (ORDER BY keyword_score DESC, id) AS keyword_rank
    FROM (
        SELECT i.id, ts_rank_cd(i.search_document, q.query) AS keyword_score
        FROM gallery_image i, (SELECT {tsquery} AS query) q
        WHERE i.search_document @@ q.query AND i.status <> 'failed' AND {conditions}
        ORDER BY keyword_score DESC, i.id
        LIMIT %(pool)s
    ) matches
)"""

# The semantic ranking's first rows, as selector.py read them (best first, within the minimum
# score): the same ranks as a semantic search's, so pages of both agree.
SEMANTIC_RANKED = """
semantic AS (
    SELECT id, distance, rank AS semantic_rank
    FROM unnest(%(semantic_ids)s::bigint[], %(semantic_distances)s::float8[])
         WITH ORDINALITY AS s(id, distance, rank)
),
semantic_ranked AS (SELECT id, distance, semantic_rank FROM semantic)"""

# A keyword search has no vector side: the same statement, fusing with nothing.
NO_SEMANTIC = """
semantic AS (SELECT NULL::bigint AS id, NULL::float8 AS distance WHERE false),
semantic_ranked AS (SELECT id, distance, NULL::bigint AS semantic_rank FROM semantic)"""

# The same shape of answer as selector.SEARCH_SQL: the totals in a row of their own.
FUSED_SQL = """
WITH {semantic_ranked},
{keyword_ranked},
fused AS MATERIALIZED (
    SELECT coalesce(s.id, k.id) AS id, s.semantic_rank, k.keyword_rank, s.distance,
           k.keyword_score,
           coalesce(1.0 / (%(rrf_k)s + s.semantic_rank), 0)
             + coalesce(1.0 / (%(rrf_k)s + k.keyword_rank), 0) AS fused_score
    FROM semantic_ranked s FULL JOIN keyword_ranked k ON k.id = s.id
),
totals AS (
    SELECT (SELECT count(*) FROM semantic) AS candidate_count,
           (SELECT count(*) FROM fused) AS match_count,
           (SELECT 1 - min(distance) FROM semantic) AS best_score,
           (SELECT count(*) FROM keyword_ranked) AS keyword_count
),
page AS (
    SELECT {columns}, c.semantic_rank, c.keyword_rank, c.distance, c.keyword_score,
           c.fused_score
    FROM fused c JOIN gallery_image i ON i.id = c.id
    ORDER BY {order}
    LIMIT %(limit)s OFFSET %(offset)s
)
SELECT p.*, {score} AS score, 1 - p.distance AS similarity, t.candidate_count, t.match_count,
       t.best_score, t.keyword_count,
       {tag_names} AS tag_names
FROM totals t LEFT JOIN page p ON true
ORDER BY {page_order}
"""
SCORES = {"hybrid": "p.fused_score", "keyword": "p.keyword_score"}
RELEVANCE_ORDER = "{c}.fused_score DESC, {c}.id"


def depth(wanted: int) -> int:
    """How deep a keyword search reads its ranking: at least SEARCH_HYBRID_DEPTH, deeper for
    a deeper page (the ranking is exact, so reading deeper only appends to it)."""
    return min(max(wanted, settings.SEARCH_HYBRID_DEPTH), settings.SEARCH_MAX_RESULTS)


def fused_statement(
    mode: str,
    query: KeywordQuery,
    *,
    filters: list[str],
    columns: str,
    order: str,
    page_order: str,
) -> tuple[str, dict]:
    """The statement of a `keyword` or `hybrid` search and its parameters; `filters` are the
    search's conditions written for the image table (filters.IMAGES). Besides these: the
    semantic ranking's rows, which selector.py supplies as `semantic_ids` and
    `semantic_distances`, and `pool`, the keyword ranking's depth)."""
    if query:
        tsquery, params = query.sql()
        keyword_ranked = KEYWORD_RANKED.format(
            tsquery=tsquery, conditions=" AND ".join(["true", *filters])
        )
    else:
        # No word a document can hold ("!!!"): the keyword ranking is empty.
        params = {}
        keyword_ranked = (
            "keyword_ranked AS (SELECT NULL::bigint AS id, NULL::float4 AS keyword_score, "
            "NULL::bigint AS keyword_rank WHERE false)"
        )
    semantic_ranked = SEMANTIC_RANKED if mode == "hybrid" else NO_SEMANTIC
    sql = FUSED_SQL.format(
        semantic_ranked=semantic_ranked.strip(),
        keyword_ranked=keyword_ranked.strip(),
        columns=columns,
        order=order,
        page_order=page_order,
        score=SCORES[mode],
        tag_names=tag_names_of("p.id"),
    )
    return sql, {**params, "rrf_k": RRF_K}
