-- The storage manager: versioned files in a tenant/agent namespace. Contents are stored once
-- per tenant by their SHA-256 (versions that repeat a content share its blob); every write is a
-- new version; a delete is a mark that a rollback lifts, until the file is purged.
CREATE TABLE blobs (
    tenant      text NOT NULL,
    sha256      text NOT NULL,
    size        bigint NOT NULL,
    content     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, sha256)
);

CREATE TABLE files (
    tenant      text NOT NULL,
    agent       text NOT NULL,
    path        text NOT NULL,
    version     integer NOT NULL,
    deleted_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, agent, path)
);

CREATE TABLE file_versions (
    tenant      text NOT NULL,
    agent       text NOT NULL,
    path        text NOT NULL,
    version     integer NOT NULL,
    sha256      text NOT NULL,
    size        bigint NOT NULL,
    -- What made the version: `write`, or `rollback` to an earlier one.
    action      text NOT NULL CHECK (action IN ('write', 'rollback')),
    -- The syscall that wrote it: a retried write finds its version and writes no other.
    written_by  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, agent, path, version),
    FOREIGN KEY (tenant, sha256) REFERENCES blobs (tenant, sha256)
);
CREATE INDEX file_versions_blob ON file_versions (tenant, sha256);
