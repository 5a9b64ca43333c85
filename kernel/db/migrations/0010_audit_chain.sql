-- The audit log becomes tamper-evident: each tenant's rows form a hash chain. A row carries its
-- place in its chain (`seq`), the hash of the row before it and its own hash, computed over a
-- canonical text of its fields (audit_canonical; `kernos audit verify` recomputes it in Python).
-- One chain per tenant, so tenants never wait on one global lock; rows without a tenant (a
-- syscall from a workflow with no run record) chain under ''. `audit_chains` holds each chain's
-- head: its row lock orders appends to one chain, and the head is what gets anchored outside
-- PostgreSQL.

ALTER TABLE audit
    ADD COLUMN chain text,
    ADD COLUMN seq bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN hash bytea;

CREATE TABLE audit_chains (
    chain  text PRIMARY KEY,
    seq    bigint NOT NULL DEFAULT 0,
    hash   bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    at     timestamptz
);

-- Version 1 of the canonical text: every field in a fixed order, NULL as `N`, a value as
-- `S<bytes>:<text>` (length-prefixed, so no separator can be forged inside a value); the time in
-- UTC to the microsecond, whatever the session's TimeZone or DateStyle.
CREATE FUNCTION audit_canonical(a audit) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT 'kernos-audit-v1' || string_agg(
        CASE WHEN f IS NULL THEN 'N' ELSE 'S' || octet_length(f) || ':' || f END, '' ORDER BY n)
    FROM unnest(ARRAY[
        a.chain, a.seq::text,
        to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        a.workflow_id, a.execution_run_id, a.activity_id, a.attempt::text,
        a.run_id, a.tenant, a.user_name, a.agent,
        a.syscall, a.resource, a.decision, a.rule, a.reason, a.basis
    ]) WITH ORDINALITY AS field(f, n)
$$;

-- Append one decision to its tenant's chain and return the row that stands: a redelivered
-- attempt (same key) gets the row written the first time, and nothing is appended.
CREATE FUNCTION audit_append(
    p_workflow_id text, p_execution_run_id text, p_activity_id text, p_attempt integer,
    p_run_id text, p_tenant text, p_user_name text, p_agent text,
    p_syscall text, p_resource text, p_decision text, p_rule text, p_reason text, p_basis text
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
    entry.chain := link;
    entry.seq := head.seq + 1;
    entry.prev_hash := head.hash;
    entry.hash := sha256(head.hash || convert_to(audit_canonical(entry), 'UTF8'));
    INSERT INTO audit SELECT entry.*;
    UPDATE audit_chains SET seq = entry.seq, hash = entry.hash, at = entry.at WHERE chain = link;
    RETURN entry;
END $$;

-- Rows written before this migration join their chains in the order they were written.
ALTER TABLE audit DISABLE TRIGGER audit_append_only;
DO $$
DECLARE
    entry audit;
    head audit_chains;
BEGIN
    FOR entry IN SELECT * FROM audit ORDER BY id LOOP
        INSERT INTO audit_chains (chain) VALUES (coalesce(entry.tenant, '')) ON CONFLICT DO NOTHING;
        SELECT * INTO head FROM audit_chains WHERE chain = coalesce(entry.tenant, '');
        entry.chain := head.chain;
        entry.seq := head.seq + 1;
        entry.prev_hash := head.hash;
        entry.hash := sha256(head.hash || convert_to(audit_canonical(entry), 'UTF8'));
        UPDATE audit SET chain = entry.chain, seq = entry.seq, prev_hash = entry.prev_hash,
                         hash = entry.hash
        WHERE id = entry.id;
        UPDATE audit_chains SET seq = entry.seq, hash = entry.hash, at = entry.at
        WHERE chain = entry.chain;
    END LOOP;
END $$;
ALTER TABLE audit ENABLE TRIGGER audit_append_only;

ALTER TABLE audit
    ALTER COLUMN chain SET NOT NULL,
    ALTER COLUMN seq SET NOT NULL,
    ALTER COLUMN prev_hash SET NOT NULL,
    ALTER COLUMN hash SET NOT NULL,
    ADD CONSTRAINT audit_chain_seq UNIQUE (chain, seq);
CREATE INDEX audit_tenant_at ON audit (tenant, at);
CREATE INDEX audit_at ON audit (at);
