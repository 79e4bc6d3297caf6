-- Quality reasons (why a point is BAD or UNCERTAIN: "timeout", "clamped to the range maximum 100", ...), on
-- both backends. A reason is a category: each text is stored once in nexus.reasons and a point refers to it
-- by id (NULL: no reason, every GOOD point), so a reason costs a point 4 bytes, or nothing.
CREATE TABLE nexus.reasons (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    text        text NOT NULL UNIQUE,      -- at most 400 characters (proto.points.MAX_REASON_CHARS)
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Nullable, no default: a metadata-only change on a plain table, a hypertable and its compressed chunks.
ALTER TABLE nexus.points ADD COLUMN reason_id integer;  -- nexus.reasons.id (no FK: see nexus.points)

CREATE OR REPLACE VIEW nexus.metrics AS
SELECT p.time, t.path, t.enterprise, t.site, t.area, t.line, t.device, t.tag,
       p.value, p.value_text,
       CASE (p.status >> 30) WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END AS quality,
       p.status, t.unit, r.text AS reason
FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id
LEFT JOIN nexus.reasons r ON r.id = p.reason_id;
