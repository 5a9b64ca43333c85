-- The tool manager's record of every tool call: its arguments, outcome and result, keyed by
-- the syscall (workflow id, execution, activity id) so that a retried attempt finds what its
-- first attempt did, and an irreversible tool is never run twice.

CREATE TABLE tool_calls (
    workflow_id       text NOT NULL,
    execution_run_id  text NOT NULL,
    activity_id       text NOT NULL,
    run_id            text NOT NULL,
    tenant            text NOT NULL,
    agent             text NOT NULL,
    tool              text NOT NULL,
    call_id           text NOT NULL,
    input_sha256      bytea NOT NULL,
    arguments         text NOT NULL,
    status            text NOT NULL CHECK (status IN ('started', 'ok', 'error')),
    attempts          integer NOT NULL DEFAULT 1,
    result            text,
    error_type        text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    PRIMARY KEY (workflow_id, execution_run_id, activity_id)
);
CREATE INDEX tool_calls_run ON tool_calls (run_id, started_at);
CREATE INDEX tool_calls_tenant_tool ON tool_calls (tenant, tool, started_at);
