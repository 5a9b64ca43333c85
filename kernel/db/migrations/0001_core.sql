-- The kernel's record of every run, and the audit log of every access decision.

CREATE TABLE runs (
    run_id                  text PRIMARY KEY,
    first_execution_run_id  text,
    tenant                  text NOT NULL,
    user_name               text NOT NULL,
    agent                   text NOT NULL,
    priority                smallint NOT NULL CHECK (priority BETWEEN 1 AND 5),
    model                   text NOT NULL,
    spec                    jsonb NOT NULL,
    status                  text NOT NULL DEFAULT 'admitted'
        CHECK (status IN ('admitted', 'running', 'completed', 'failed', 'cancelled')),
    created_at              timestamptz NOT NULL DEFAULT now(),
    finished_at             timestamptz,
    output                  text,
    error                   text,
    input_tokens            bigint NOT NULL DEFAULT 0,
    output_tokens           bigint NOT NULL DEFAULT 0
);
CREATE INDEX runs_tenant_created ON runs (tenant, created_at DESC);
CREATE INDEX runs_created ON runs (created_at DESC);

-- One row per decision, keyed by the activity attempt that asked: a retry adds its own row,
-- a redelivered attempt adds none.
CREATE TABLE audit (
    id                bigserial PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT clock_timestamp(),
    workflow_id       text NOT NULL,
    execution_run_id  text NOT NULL,
    activity_id       text NOT NULL,
    attempt           integer NOT NULL,
    run_id            text,
    tenant            text,
    user_name         text,
    agent             text,
    syscall           text NOT NULL,
    resource          text NOT NULL,
    decision          text NOT NULL CHECK (decision IN ('allow', 'deny')),
    rule              text,
    reason            text,
    UNIQUE (workflow_id, execution_run_id, activity_id, attempt)
);
CREATE INDEX audit_run ON audit (run_id, id);

CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % is not allowed', TG_OP;
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();

-- What each allowed syscall attempt came to: its outcome and the tokens it used.
CREATE TABLE syscall_results (
    workflow_id       text NOT NULL,
    execution_run_id  text NOT NULL,
    activity_id       text NOT NULL,
    attempt           integer NOT NULL,
    run_id            text NOT NULL,
    syscall           text NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('ok', 'error')),
    error_type        text,
    input_tokens      bigint NOT NULL DEFAULT 0,
    output_tokens     bigint NOT NULL DEFAULT 0,
    duration_ms       double precision NOT NULL,
    finished_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workflow_id, execution_run_id, activity_id, attempt)
);
CREATE INDEX syscall_results_run ON syscall_results (run_id);
