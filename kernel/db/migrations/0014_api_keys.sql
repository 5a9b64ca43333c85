-- API keys: a client that presents one acts as its user, in its tenant. Only a hash of the
-- secret is kept; the key is shown once, when created.

CREATE TABLE api_keys (
    id             text PRIMARY KEY,
    secret_sha256  bytea NOT NULL,
    user_name      text NOT NULL,
    tenant         text NOT NULL,
    label          text,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    last_used_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);
