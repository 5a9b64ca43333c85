-- The kernel's role stops owning what it is judged by. Migrations run as an owner role (which
-- owns the database, the schema and every object); the kernel's login role is a member of the
-- group kernos_kernel, granted here exactly what the kernel needs. The audit, the chains, the
-- syscall results, usage, budgets and approvals it reads, and changes only through the owner's
-- functions below (SECURITY DEFINER, a fixed search_path, EXECUTE for kernos_kernel alone): no
-- UPDATE, DELETE, TRUNCATE, ALTER, DROP or trigger change on them is the kernel's to make.
-- Every later migration grants what it adds.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kernos_kernel') THEN
        RAISE EXCEPTION 'role kernos_kernel does not exist: as a superuser, CREATE ROLE '
            'kernos_kernel NOLOGIN and GRANT kernos_kernel TO the kernel''s login role, then run '
            'the migrations as the owner role (README: "Database roles")';
    END IF;
    IF pg_has_role(current_user, 'kernos_kernel', 'MEMBER') THEN
        RAISE EXCEPTION 'the migrations run as %, a member of kernos_kernel: run them as an owner '
            'role that is not the kernel''s (README: "Database roles")', current_user;
    END IF;
END $$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO kernos_kernel;

-- What the kernel keeps: its runs, generations, conversations, memory, files, tool calls, and
-- (written by the operator's CLI with the kernel's credentials) rules and API keys.
GRANT SELECT, INSERT, UPDATE, DELETE ON
    runs, generations, conversations, conversation_messages, memories, memory_use, blobs, files,
    file_versions, tool_calls, casbin_rule, api_keys
TO kernos_kernel;
GRANT USAGE ON SEQUENCE casbin_rule_id_seq TO kernos_kernel;
-- What the kernel is judged by: read only.
GRANT SELECT ON
    audit, audit_chains, syscall_results, tenant_usage, tenant_budgets, approvals
TO kernos_kernel;

-- Appends to the audit chains.
ALTER FUNCTION audit_append(text, text, text, integer, text, text, text, text, text, text, text,
                            text, text, text, text)
    SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE ALL ON FUNCTION audit_append(text, text, text, integer, text, text, text, text, text,
                                    text, text, text, text, text, text),
    audit_canonical(audit)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(text, text, text, integer, text, text, text, text, text,
                                       text, text, text, text, text, text),
    audit_canonical(audit)
TO kernos_kernel;

-- What an allowed syscall attempt came to, and its tokens added to its tenant's: only for an
-- attempt the audit allowed, with the run and tenant that decision recorded, once.
CREATE FUNCTION syscall_result_record(
    p_workflow_id text, p_execution_run_id text, p_activity_id text, p_attempt integer,
    p_syscall text, p_error_type text, p_input_tokens bigint, p_output_tokens bigint,
    p_duration_ms double precision
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    decided audit;
BEGIN
    IF p_input_tokens < 0 OR p_output_tokens < 0 THEN
        RAISE EXCEPTION 'a syscall result cannot return tokens (% input, % output)',
            p_input_tokens, p_output_tokens;
    END IF;
    SELECT * INTO decided FROM audit
    WHERE workflow_id = p_workflow_id AND execution_run_id = p_execution_run_id
      AND activity_id = p_activity_id AND attempt = p_attempt;
    IF NOT FOUND OR decided.decision <> 'allow' OR decided.syscall <> p_syscall
       OR decided.run_id IS NULL THEN
        RAISE EXCEPTION 'no allowed % decision for attempt %/%/%/%: no result is recorded',
            p_syscall, p_workflow_id, p_execution_run_id, p_activity_id, p_attempt;
    END IF;
    -- Only this transaction's commit skips the WAL flush: the decision before it was durable.
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH result AS (
        INSERT INTO syscall_results (workflow_id, execution_run_id, activity_id, attempt, run_id,
                                     tenant, syscall, outcome, error_type, input_tokens,
                                     output_tokens, duration_ms)
        VALUES (p_workflow_id, p_execution_run_id, p_activity_id, p_attempt, decided.run_id,
                decided.tenant, p_syscall,
                CASE WHEN p_error_type IS NULL THEN 'ok' ELSE 'error' END, p_error_type,
                p_input_tokens, p_output_tokens, p_duration_ms)
        ON CONFLICT DO NOTHING
        RETURNING tenant, input_tokens, output_tokens
    )
    INSERT INTO tenant_usage AS u (tenant, input_tokens, output_tokens, syscalls)
    SELECT tenant, input_tokens, output_tokens, 1 FROM result
    ON CONFLICT (tenant) DO UPDATE SET
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        syscalls = u.syscalls + 1,
        updated_at = now();
END $$;

-- A tenant's token budget set (or lifted, with NULL), and the change appended to its chain in
-- the same transaction: no budget moves unaudited.
CREATE FUNCTION budget_set(p_tenant text, p_max_tokens bigint, p_by text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_max_tokens IS NOT NULL AND p_max_tokens < 1 THEN
        RAISE EXCEPTION 'a token budget must be at least 1, not %', p_max_tokens;
    END IF;
    PERFORM audit_append(
        'operator:' || p_by, 'operator', 'budget.set/' || gen_random_uuid(), 1, NULL, p_tenant,
        p_by, '*', 'budget.set', 'budget:' || p_tenant, 'allow', NULL,
        CASE WHEN p_max_tokens IS NULL THEN 'lifted the cap'
             ELSE format('capped at %s tokens', p_max_tokens) END,
        'policy');
    IF p_max_tokens IS NULL THEN
        DELETE FROM tenant_budgets WHERE tenant = p_tenant;
    ELSE
        INSERT INTO tenant_budgets (tenant, max_tokens) VALUES (p_tenant, p_max_tokens)
        ON CONFLICT (tenant) DO UPDATE SET max_tokens = EXCLUDED.max_tokens, set_at = now();
    END IF;
END $$;

-- A syscall that needs a human's approval becomes a pending request.
CREATE FUNCTION approval_request(
    p_id uuid, p_run_id text, p_syscall text, p_resource text, p_request jsonb,
    p_input_sha256 bytea, p_rule text, p_timeout_s double precision
) RETURNS approvals LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    run runs;
    created approvals;
BEGIN
    SELECT * INTO run FROM runs WHERE run_id = p_run_id AND finished_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % is not a live admitted run: it asks for no approval', p_run_id;
    END IF;
    INSERT INTO approvals (id, run_id, tenant, user_name, agent, syscall, resource, request,
                           input_sha256, rule, expires_at)
    VALUES (p_id, run.run_id, run.tenant, run.user_name, run.agent, p_syscall, p_resource,
            p_request, p_input_sha256, p_rule, now() + make_interval(secs => p_timeout_s))
    RETURNING * INTO created;
    RETURN created;
END $$;

-- The attempt `p_used_by` takes a decided (or expired) request: one decision, one syscall. A
-- pending request past its time expires here. Nothing here approves anything.
CREATE FUNCTION approval_use(p_id uuid, p_used_by text) RETURNS approvals
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    used approvals;
BEGIN
    UPDATE approvals SET
        status = CASE WHEN status = 'pending' THEN 'expired' ELSE status END,
        used_by = p_used_by
    WHERE id = p_id AND (used_by IS NULL OR used_by = p_used_by)
      AND (status IN ('approved', 'denied', 'expired')
           OR (status = 'pending' AND expires_at < now()))
    RETURNING * INTO used;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'approval % is not decided, or another attempt used it', p_id;
    END IF;
    RETURN used;
END $$;

-- A human's decision on a pending request, appended to the run's tenant's chain in the same
-- transaction (who may decide is the policy's, checked by the caller and recorded here).
CREATE FUNCTION approval_decide(
    p_id uuid, p_approver text, p_approve boolean, p_reason text, p_rule text, p_key_id text
) RETURNS approvals LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    decided approvals;
BEGIN
    UPDATE approvals SET status = CASE WHEN p_approve THEN 'approved' ELSE 'denied' END,
        decided_by = p_approver, decided_at = now(), reason = p_reason
    WHERE id = p_id AND status = 'pending' AND expires_at >= now()
    RETURNING * INTO decided;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM audit_append(
        decided.run_id, 'operator', 'approval.decide/' || gen_random_uuid(), 1, decided.run_id,
        decided.tenant, p_approver, decided.agent, 'approval.decide', decided.resource, 'allow',
        p_rule,
        format('%s approval %s (%s on %s)', CASE WHEN p_approve THEN 'approve' ELSE 'deny' END,
               decided.id, decided.syscall, decided.resource)
            || coalesce(': ' || p_reason, ''),
        'policy', p_key_id);
    RETURN decided;
END $$;

REVOKE ALL ON FUNCTION syscall_result_record(text, text, text, integer, text, text, bigint,
                                             bigint, double precision),
    budget_set(text, bigint, text),
    approval_request(uuid, text, text, text, jsonb, bytea, text, double precision),
    approval_use(uuid, text),
    approval_decide(uuid, text, boolean, text, text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syscall_result_record(text, text, text, integer, text, text, bigint,
                                                bigint, double precision),
    budget_set(text, bigint, text),
    approval_request(uuid, text, text, text, jsonb, bytea, text, double precision),
    approval_use(uuid, text),
    approval_decide(uuid, text, boolean, text, text, text)
TO kernos_kernel;
