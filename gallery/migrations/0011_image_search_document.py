"""The keyword side of search: a stored full-text document per image, with a GIN index.

`gallery_image.search_document` is a STORED GENERATED tsvector over the caption, the tags,
the text read in the image (OCR) and the file name's words, so every write of those columns
(services, the admin, `QuerySet.update`, raw SQL) updates it in the same statement.

Tags are a many-to-many: a generated column cannot read another table. Their names are
copied into `gallery_image.tag_text` by triggers on the link table (insert, delete, update,
truncate) and on tag renames, rather than by the services, because links are also written by
the admin's widget, `bulk_create`, benchmarks' raw SQL and restores, and a trigger sees all
of them. Both columns belong to the database, not to the Django model: an `Image` held in
memory and saved later would otherwise write back a stale `tag_text`.

The document has two parts: English (stemmed, stop words dropped; weights A caption and
tags, B text in the image, C file name) for matching words, and `simple` (unstemmed) for
prefixes, since a prefix can be longer than a word's stem ("happin" is not a prefix of
"happi", the stem of "happiness").
"""

from django.db import migrations

FILE_NAME_WORDS = (
    r"translate(regexp_replace(original_filename, '\.[A-Za-z0-9]{1,5}$', ''), '._-', '   ')"
)

FORWARD = rf"""
ALTER TABLE gallery_image ADD COLUMN tag_text text NOT NULL DEFAULT '';

UPDATE gallery_image i SET tag_text = tags.names
FROM (
    SELECT it.image_id, string_agg(t.name, ' ' ORDER BY lower(t.name), t.id) AS names
    FROM gallery_image_tags it JOIN gallery_tag t ON t.id = it.tag_id
    GROUP BY it.image_id
) tags
WHERE tags.image_id = i.id;

ALTER TABLE gallery_image ADD COLUMN search_document tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, caption), 'A')
    || setweight(to_tsvector('english'::regconfig, tag_text), 'A')
    || setweight(to_tsvector('english'::regconfig, ocr_text), 'B')
    || setweight(to_tsvector('english'::regconfig, {FILE_NAME_WORDS}), 'C')
    || setweight(to_tsvector('simple'::regconfig,
           caption || ' ' || tag_text || ' ' || ocr_text || ' ' || {FILE_NAME_WORDS}), 'D')
) STORED;

CREATE INDEX gallery_image_search_document ON gallery_image USING gin (search_document);

CREATE FUNCTION gallery_image_refresh_tag_text(image_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE gallery_image i SET tag_text = fresh.names
    FROM (
        SELECT ids.id, coalesce((
            SELECT string_agg(t.name, ' ' ORDER BY lower(t.name), t.id)
            FROM gallery_image_tags it JOIN gallery_tag t ON t.id = it.tag_id
            WHERE it.image_id = ids.id), '') AS names
        FROM (SELECT DISTINCT unnest(image_ids) AS id) ids
    ) fresh
    WHERE i.id = fresh.id AND i.tag_text IS DISTINCT FROM fresh.names
$$;

CREATE FUNCTION gallery_image_tags_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM gallery_image_refresh_tag_text(ARRAY(SELECT image_id FROM new_links));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM gallery_image_refresh_tag_text(ARRAY(SELECT image_id FROM old_links));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM gallery_image_refresh_tag_text(
            ARRAY(SELECT image_id FROM old_links UNION SELECT image_id FROM new_links));
    ELSE  -- TRUNCATE: no image has a tag any more
        UPDATE gallery_image SET tag_text = '' WHERE tag_text <> '';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER gallery_image_tags_inserted AFTER INSERT ON gallery_image_tags
    REFERENCING NEW TABLE AS new_links
    FOR EACH STATEMENT EXECUTE FUNCTION gallery_image_tags_changed();

CREATE TRIGGER gallery_image_tags_deleted AFTER DELETE ON gallery_image_tags
    REFERENCING OLD TABLE AS old_links
    FOR EACH STATEMENT EXECUTE FUNCTION gallery_image_tags_changed();

CREATE TRIGGER gallery_image_tags_updated AFTER UPDATE ON gallery_image_tags
    REFERENCING OLD TABLE AS old_links NEW TABLE AS new_links
    FOR EACH STATEMENT EXECUTE FUNCTION gallery_image_tags_changed();

CREATE TRIGGER gallery_image_tags_truncated AFTER TRUNCATE ON gallery_image_tags
    FOR EACH STATEMENT EXECUTE FUNCTION gallery_image_tags_changed();

CREATE FUNCTION gallery_tag_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gallery_image_refresh_tag_text(
        ARRAY(SELECT image_id FROM gallery_image_tags WHERE tag_id = NEW.id));
    RETURN NULL;
END
$$;

CREATE TRIGGER gallery_tag_renamed AFTER UPDATE OF name ON gallery_tag
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION gallery_tag_renamed();
"""

BACKWARD = """
DROP TRIGGER gallery_tag_renamed ON gallery_tag;
DROP FUNCTION gallery_tag_renamed();
DROP TRIGGER gallery_image_tags_truncated ON gallery_image_tags;
DROP TRIGGER gallery_image_tags_updated ON gallery_image_tags;
DROP TRIGGER gallery_image_tags_deleted ON gallery_image_tags;
DROP TRIGGER gallery_image_tags_inserted ON gallery_image_tags;
DROP FUNCTION gallery_image_tags_changed();
DROP FUNCTION gallery_image_refresh_tag_text(bigint[]);
ALTER TABLE gallery_image DROP COLUMN search_document;
ALTER TABLE gallery_image DROP COLUMN tag_text;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("gallery", "0010_image_ocr_text"),
    ]

    # One statement each: Django would otherwise split the script itself, $$ bodies included.
    operations = [
        migrations.RunSQL(
            [statement for statement in FORWARD.split("\n\n") if statement.strip()],
            [statement for statement in BACKWARD.split("\n") if statement.strip()],
        )
    ]
