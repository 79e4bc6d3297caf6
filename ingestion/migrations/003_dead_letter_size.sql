-- Dead letters of any size: a message larger than the worker's max_message_bytes is kept as its first
-- bytes only; size (bytes of the whole message) and sha256 (of the whole message) still name it. NULL in
-- rows written before this migration (their payload column is the whole message).
ALTER TABLE nexus.dead_letters
    ADD COLUMN size bigint,
    ADD COLUMN sha256 bytea;
