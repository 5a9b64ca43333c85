-- What the kernel fixed when it admitted each run, so that what a workflow claims about its
-- syscalls (priority, fairness, timeouts, retries) is checked against the kernel's record and
-- not against the settings of the day: changing `tenant_weights` later must not make an honest
-- run look forged. Runs admitted before this migration get the defaults (and their own
-- policy): a kernel with any [limits] or [scheduler] setting other than the default should let
-- its runs finish before upgrading.
ALTER TABLE runs
    ADD COLUMN scheduling jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN limits jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN api_key_id text;
UPDATE runs SET scheduling = jsonb_build_object('policy', spec->>'policy')
WHERE spec->>'policy' IS NOT NULL;
ALTER TABLE runs ALTER COLUMN scheduling DROP DEFAULT, ALTER COLUMN limits DROP DEFAULT;

-- A syscall can now be refused because its workflow claimed what the kernel's record does not
-- say (a queue, a priority, a model, a timeout): basis 'claim'.
ALTER TABLE audit DROP CONSTRAINT audit_basis_check;
ALTER TABLE audit ADD CONSTRAINT audit_basis_check
    CHECK (basis IN ('policy', 'identity', 'finished', 'budget', 'approval', 'claim'));

-- A row written for a request made with an API key (the gateway's) names the key. Rows with a
-- key hash under version 2 of the canonical text (version 1's fields, then the key); rows
-- without one keep version 1, so every row written before stays valid.
ALTER TABLE audit ADD COLUMN key_id text;

CREATE OR REPLACE FUNCTION audit_canonical(a audit) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN a.key_id IS NULL THEN 'kernos-audit-v1' ELSE 'kernos-audit-v2' END
        || string_agg(
            CASE WHEN f IS NULL THEN 'N' ELSE 'S' || octet_length(f) || ':' || f END, ''
            ORDER BY n)
    FROM unnest(ARRAY[
        a.chain, a.seq::text,
        to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        a.workflow_id, a.execution_run_id, a.activity_id, a.attempt::text,
        a.run_id, a.tenant, a.user_name, a.agent,
        a.syscall, a.resource, a.decision, a.rule, a.reason, a.basis
    ] || CASE WHEN a.key_id IS NULL THEN ARRAY[]::text[] ELSE ARRAY[a.key_id] END)
        WITH ORDINALITY AS field(f, n)
$$;

DROP FUNCTION audit_append(text, text, text, integer, text, text, text, text, text, text, text,
                           text, text, text);
CREATE FUNCTION audit_append(
    p_workflow_id text, p_execution_run_id text, p_activity_id text, p_attempt integer,
    p_run_id text, p_tenant text, p_user_name text, p_agent text,
    p_syscall text, p_resource text, p_decision text, p_rule text, p_reason text, p_basis text,
    p_key_id text DEFAULT NULL
) RETURNS audit LANGUAGE plpgsql AS $$
DECLARE
    link text := coalesce(p_tenant, '');
    head audit_chains;
    entry audit;
BEGIN
    INSERT INTO audit_chains (chain) VALUES (link) ON CONFLICT DO NOTHING;
    SELECT * INTO head FROM audit_chains WHERE chain = link FOR UPDATE;
    -- Under the chain's lock: an attempt is always of one run, so of one chain.
    SELECT * INTO entry FROM audit
    WHERE workflow_id = p_workflow_id AND execution_run_id = p_execution_run_id
      AND activity_id = p_activity_id AND attempt = p_attempt;
    IF FOUND THEN
        RETURN entry;
    END IF;
    entry.id := nextval(pg_get_serial_sequence('audit', 'id'));
    entry.at := clock_timestamp();
    entry.workflow_id := p_workflow_id;
    entry.execution_run_id := p_execution_run_id;
    entry.activity_id := p_activity_id;
    entry.attempt := p_attempt;
    entry.run_id := p_run_id;
    entry.tenant := p_tenant;
    entry.user_name := p_user_name;
    entry.agent := p_agent;
    entry.syscall := p_syscall;
    entry.resource := p_resource;
    entry.decision := p_decision;
    entry.rule := p_rule;
    entry.reason := p_reason;
    entry.basis := p_basis;
    entry.key_id := p_key_id;
    entry.chain := link;
    entry.seq := head.seq + 1;
    entry.prev_hash := head.hash;
    entry.hash := sha256(head.hash || convert_to(audit_canonical(entry), 'UTF8'));
    INSERT INTO audit SELECT entry.*;
    UPDATE audit_chains SET seq = entry.seq, hash = entry.hash, at = entry.at WHERE chain = link;
    RETURN entry;
END $$;
