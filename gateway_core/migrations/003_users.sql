-- Users of the console (issue 14): a login name, one of the API key roles, an argon2id password hash.
-- Disabled users cannot log in, and their sessions are revoked when they are disabled.
CREATE TABLE core.users (
    name                 text PRIMARY KEY,        -- login name, lower case
    role                 text NOT NULL CHECK (role IN ('admin', 'engineer', 'operator', 'viewer')),
    password_hash        text NOT NULL,           -- argon2id, in argon2's own encoded form ($argon2id$v=19$...)
    disabled             boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    created_by           text NOT NULL,
    password_changed_at  timestamptz NOT NULL DEFAULT now()
);

-- One login = one session; its refresh tokens rotate on every use. Revoked by logout, by a password change
-- or reset, by disabling the user, and when a refresh token already used is presented again (reuse: the
-- token was copied, so the whole session goes).
CREATE TABLE core.sessions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name     text NOT NULL REFERENCES core.users ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    address       text,                           -- client address at login
    revoked_at    timestamptz,
    revoked_why   text                            -- logout, reuse, password, disabled, reset
);
CREATE INDEX sessions_user_idx ON core.sessions (user_name) WHERE revoked_at IS NULL;

-- Refresh tokens as sha256 hex digests (the token itself is only in the client's cookie). used_at set:
-- rotated; presenting it again is reuse.
CREATE TABLE core.refresh_tokens (
    token_hash  text PRIMARY KEY,
    session_id  bigint NOT NULL REFERENCES core.sessions ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON core.refresh_tokens (session_id);

-- Secrets the service makes itself when the settings give none: the access tokens' signing key, shared by
-- every replica on this database and kept across restarts.
CREATE TABLE core.secrets (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
