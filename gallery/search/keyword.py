"""Keyword search: PostgreSQL full-text search over captions, file names and tags."""

from django.db import connection

KEYWORD_SQL = """
WITH query AS (
    -- Any of the query's stemmed words (OR), so a long caption still finds partial matches.
    SELECT NULLIF(array_to_string(tsvector_to_array(to_tsvector('english', %(text)s)), ' | '),
                  '')::tsquery AS terms
), documents AS (
    SELECT i.id, to_tsvector('english',
        i.caption || ' ' || regexp_replace(i.original_filename, '[._-]+', ' ', 'g') || ' ' ||
        coalesce((SELECT string_agg(tag.name, ' ') FROM gallery_tag tag
                  JOIN gallery_image_tags it ON it.tag_id = tag.id WHERE it.image_id = i.id), '')
    ) AS document
    FROM gallery_image i
)
SELECT d.id FROM documents d, query q
WHERE d.document @@ q.terms
ORDER BY ts_rank_cd(d.document, q.terms) DESC, d.id
LIMIT %(limit)s
"""


def keyword_search(text: str, *, limit: int = 100) -> list[int]:
    """Image ids ranked by PostgreSQL full-text search over captions, file names and tags."""
    with connection.cursor() as cursor:
        cursor.execute(KEYWORD_SQL, {"text": text, "limit": limit})
        return [row[0] for row in cursor.fetchall()]
