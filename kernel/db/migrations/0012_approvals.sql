-- Durable human approval: a syscall that policy marks (`a` rules) waits for a decision that the
-- kernel records here. The syscall's activity requires an approved row for exactly its request
-- (same run, same input), and consumes it: one approval lets one syscall through.

CREATE TABLE approvals (
    id            uuid PRIMARY KEY,
    run_id        text NOT NULL,
    tenant        text NOT NULL,
    user_name     text NOT NULL,
    agent         text NOT NULL,
    syscall       text NOT NULL,
    resource      text NOT NULL,
    request       jsonb NOT NULL,
    input_sha256  bytea NOT NULL,
    rule          text NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    decided_by    text,
    decided_at    timestamptz,
    reason        text,
    used_by       text
);
-- One open request per run and input: a retried or re-dispatched syscall finds it.
CREATE UNIQUE INDEX approvals_open ON approvals (run_id, input_sha256)
    WHERE status = 'pending' OR (status = 'approved' AND used_by IS NULL);
CREATE INDEX approvals_pending ON approvals (tenant, requested_at) WHERE status = 'pending';
CREATE INDEX approvals_run ON approvals (run_id, requested_at);

-- A decision can now rest on a human's approval (or its absence).
ALTER TABLE audit DROP CONSTRAINT audit_basis_check;
ALTER TABLE audit ADD CONSTRAINT audit_basis_check
    CHECK (basis IN ('policy', 'identity', 'finished', 'budget', 'approval'));
