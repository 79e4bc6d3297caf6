-- Configuration store of gateway_core: devices with every version kept, global revisions, audit, API keys.
CREATE SCHEMA IF NOT EXISTS core;

-- One row: the global configuration revision. Writers lock it (FOR UPDATE), so revisions are dense
-- and commits are serialised across service replicas.
CREATE TABLE core.state (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    revision  bigint NOT NULL DEFAULT 0
);
INSERT INTO core.state DEFAULT VALUES;

CREATE TABLE core.revisions (
    revision     bigint PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,          -- API key name
    action       text NOT NULL,          -- device.create, device.update, device.delete, tag.put, tag.delete, import, rollback
    summary      text NOT NULL,
    rollback_of  bigint                  -- the revision a rollback restored
);
INSERT INTO core.revisions (revision, actor, action, summary) VALUES (0, 'system', 'init', 'empty configuration');

-- The current configuration: one row per device, its mapping as a plant config [[devices]] entry
-- with the UNS levels filled in.
CREATE TABLE core.devices (
    id          text PRIMARY KEY,
    path        text NOT NULL UNIQUE,    -- enterprise/site/area/line/device
    enterprise  text NOT NULL,
    site        text NOT NULL,
    area        text NOT NULL,
    line        text NOT NULL,
    protocol    text NOT NULL,
    doc         jsonb NOT NULL,
    revision    bigint NOT NULL,         -- revision of its last change (its ETag)
    created_rev bigint NOT NULL
);
CREATE INDEX devices_location_idx ON core.devices (enterprise, site, area, line);
CREATE INDEX devices_protocol_idx ON core.devices (protocol);

-- Every version of every device. The configuration at revision R is, per device, its newest row
-- with revision <= R, unless that row's doc is NULL (deleted).
CREATE TABLE core.device_versions (
    device_id  text NOT NULL,
    revision   bigint NOT NULL REFERENCES core.revisions,
    doc        jsonb,
    PRIMARY KEY (device_id, revision)
);
CREATE INDEX device_versions_revision_idx ON core.device_versions (revision);

-- Who changed what: one row per changed object. Config changes carry their revision; API key
-- changes do not bump the configuration revision (revision NULL).
CREATE TABLE core.audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    revision  bigint REFERENCES core.revisions,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    target    text NOT NULL,             -- device:<id> or key:<name>
    before    jsonb,
    after     jsonb
);
CREATE INDEX audit_target_idx ON core.audit (target, id);
CREATE INDEX audit_revision_idx ON core.audit (revision);

-- API keys, stored as sha256 hex digests; the key itself is shown once, at creation.
CREATE TABLE core.api_keys (
    name        text PRIMARY KEY,
    role        text NOT NULL CHECK (role IN ('admin', 'engineer', 'operator', 'viewer')),
    key_hash    text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL
);
