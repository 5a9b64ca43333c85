-- Decisions over the record need a principal the kernel's workers do not have. An approval, a
-- budget, a rule or an API key changes only for:
--   * the operator: a login role in the group kernos_operator, whose credential only the
--     operator's CLI holds (on the embedded stack, .kernos/operator.toml, which workers never
--     read); or
--   * an approver with an API key: approval_decide takes the key itself and checks it against
--     its hash, so a holder of the kernel's DSN alone, who never sees a key, decides nothing.
-- The decision functions append their own rows to the chain; the kernel's role can append none
-- that allows a decision (audit_append refuses it), so an approvals row changed by hand has no
-- matching `approval.decide` in the chain, and the approval gate refuses it.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kernos_operator') THEN
        RAISE EXCEPTION 'role kernos_operator does not exist: as a superuser, CREATE ROLE '
            'kernos_operator NOLOGIN and GRANT kernos_operator TO the operator''s login role, '
            'then run the migrations again (README: "Database roles")';
    END IF;
    IF pg_has_role('kernos_kernel', 'kernos_operator', 'MEMBER')
       OR pg_has_role('kernos_operator', 'kernos_kernel', 'MEMBER') THEN
        RAISE EXCEPTION 'kernos_kernel and kernos_operator must be apart: neither a member of '
            'the other (README: "Database roles")';
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO kernos_operator;

-- The chain's writer proper: only the owner's functions call it.
ALTER FUNCTION audit_append(text, text, text, integer, text, text, text, text, text, text, text,
                            text, text, text, text)
    RENAME TO audit_chain_append;
REVOKE ALL ON FUNCTION audit_chain_append(text, text, text, integer, text, text, text, text,
                                          text, text, text, text, text, text, text)
FROM PUBLIC, kernos_kernel;

-- What the kernel and the operator append through: anything the kernel decides, and refusals
-- of any kind; a decision over the record allowed only by the operator's own role.
CREATE FUNCTION audit_append(
    p_workflow_id text, p_execution_run_id text, p_activity_id text, p_attempt integer,
    p_run_id text, p_tenant text, p_user_name text, p_agent text,
    p_syscall text, p_resource text, p_decision text, p_rule text, p_reason text, p_basis text,
    p_key_id text DEFAULT NULL
) RETURNS audit LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    decisions CONSTANT text[] := ARRAY['approval.decide', 'budget.set', 'policy.edit',
                                       'keys.create', 'keys.revoke'];
BEGIN
    -- Decisions over the record, and anything keyed like their rows (`<action>/<id>`, which
    -- the decision functions' own rows use), are not the kernel's: it records only refusals of
    -- them, each under a fresh UUID, so it can neither forge a decision nor take the key of one
    -- the operator or an approver is about to make.
    IF (p_syscall = ANY (decisions) OR split_part(p_activity_id, '/', 1) = ANY (decisions))
       AND NOT pg_has_role(session_user, 'kernos_operator', 'MEMBER')
       AND NOT (p_decision = 'deny' AND p_activity_id ~
                '^[a-z.]+/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$') THEN
        RAISE EXCEPTION '% is the operator''s or an approver''s to decide; role % appends no '
            'allowed % row, nor one keyed as a decision''s', p_syscall, session_user, p_syscall
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN audit_chain_append(p_workflow_id, p_execution_run_id, p_activity_id, p_attempt,
                              p_run_id, p_tenant, p_user_name, p_agent, p_syscall, p_resource,
                              p_decision, p_rule, p_reason, p_basis, p_key_id);
END $$;
REVOKE ALL ON FUNCTION audit_append(text, text, text, integer, text, text, text, text, text,
                                    text, text, text, text, text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(text, text, text, integer, text, text, text, text, text,
                                       text, text, text, text, text, text)
TO kernos_kernel, kernos_operator;

-- Budgets: the operator's.
CREATE OR REPLACE FUNCTION budget_set(p_tenant text, p_max_tokens bigint, p_by text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_max_tokens IS NOT NULL AND p_max_tokens < 1 THEN
        RAISE EXCEPTION 'a token budget must be at least 1, not %', p_max_tokens;
    END IF;
    PERFORM audit_chain_append(
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
REVOKE ALL ON FUNCTION budget_set(text, bigint, text) FROM PUBLIC, kernos_kernel;
GRANT EXECUTE ON FUNCTION budget_set(text, bigint, text) TO kernos_operator;

-- A decision on a pending approval, with its approver's proof: the operator's role, or an API
-- key (`kn_<id>_<secret>`) of the approval's own tenant, checked here against its hash, whose
-- user is then the approver. Who may decide is the policy's, checked by the caller and recorded
-- with the decision. The chain row is keyed by the approval and its outcome
-- (`approval.decide/<id>/approved`): the gate lets an approval through only with that row.
DROP FUNCTION approval_decide(uuid, text, boolean, text, text, text);
CREATE FUNCTION approval_decide(
    p_id uuid, p_approve boolean, p_reason text, p_rule text, p_approver text,
    p_api_key text DEFAULT NULL
) RETURNS approvals LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    asked approvals;
    decided approvals;
    token text[];
    key api_keys;
    approver text := p_approver;
    entry audit;
BEGIN
    IF p_api_key IS NOT NULL THEN
        token := regexp_match(p_api_key, '^kn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$');
        IF token IS NOT NULL THEN
            SELECT * INTO key FROM api_keys WHERE id = token[1] AND revoked_at IS NULL;
        END IF;
        IF token IS NULL OR key.id IS NULL
           OR key.secret_sha256 <> sha256(convert_to(token[2], 'UTF8')) THEN
            RAISE EXCEPTION 'authentication failed: the API key is not a valid, unrevoked key'
                USING ERRCODE = 'invalid_password';
        END IF;
    ELSIF NOT pg_has_role(session_user, 'kernos_operator', 'MEMBER') THEN
        RAISE EXCEPTION 'a decision needs its approver''s proof: an API key, or the operator''s '
            'role (% has neither)', session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO asked FROM approvals WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF key.id IS NOT NULL THEN
        -- A key decides only in its own tenant: whoever holds the kernel's DSN and some
        -- tenant's key must not approve another tenant's syscalls with it.
        IF key.tenant <> asked.tenant THEN
            RAISE EXCEPTION 'API key % is of tenant %: it decides no approval of tenant % (an '
                'approver from another tenant decides through the operator)', key.id,
                key.tenant, asked.tenant USING ERRCODE = 'insufficient_privilege';
        END IF;
        approver := key.user_name;
        IF p_approver IS DISTINCT FROM approver THEN
            RAISE EXCEPTION 'API key % is %''s: it cannot decide as %', key.id, approver,
                p_approver USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    UPDATE approvals SET status = CASE WHEN p_approve THEN 'approved' ELSE 'denied' END,
        decided_by = approver, decided_at = now(), reason = p_reason
    WHERE id = p_id AND status = 'pending' AND expires_at >= now()
    RETURNING * INTO decided;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    entry := audit_chain_append(
        decided.run_id, 'operator', 'approval.decide/' || decided.id || '/' || decided.status, 1,
        decided.run_id, decided.tenant, approver, decided.agent, 'approval.decide',
        decided.resource, 'allow', p_rule,
        format('%s approval %s (%s on %s)', CASE WHEN p_approve THEN 'approve' ELSE 'deny' END,
               decided.id, decided.syscall, decided.resource)
            || coalesce(': ' || p_reason, ''),
        'policy', key.id);
    IF entry.decision <> 'allow' OR entry.syscall <> 'approval.decide'
       OR entry.user_name IS DISTINCT FROM approver THEN
        RAISE EXCEPTION 'the chain already holds another entry for approval %: not decided',
            decided.id;
    END IF;
    RETURN decided;
END $$;
REVOKE ALL ON FUNCTION approval_decide(uuid, boolean, text, text, text, text) FROM PUBLIC;
GRANT SELECT ON approvals TO kernos_operator;
GRANT EXECUTE ON FUNCTION approval_decide(uuid, boolean, text, text, text, text)
TO kernos_kernel, kernos_operator;

-- An approval decided before this migration and not yet used has no keyed chain row: it is
-- asked again, rather than refused as if written by hand.
UPDATE approvals SET status = 'pending', decided_by = NULL, decided_at = NULL, reason = NULL
WHERE status = 'approved' AND used_by IS NULL;

-- API keys: made and revoked by the operator, each appended to the key's tenant's chain in the
-- same transaction. The kernel reads them, and notes when one was last used.
CREATE FUNCTION api_key_create(
    p_id text, p_secret_sha256 bytea, p_user text, p_tenant text, p_label text, p_by text
) RETURNS api_keys LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    created api_keys;
    entry audit;
BEGIN
    INSERT INTO api_keys (id, secret_sha256, user_name, tenant, label, created_by)
    VALUES (p_id, p_secret_sha256, p_user, p_tenant, p_label, p_by)
    RETURNING * INTO created;
    entry := audit_chain_append(
        'operator:' || p_by, 'operator', 'keys.create/' || p_id, 1, NULL, p_tenant, p_by, '*',
        'keys.create', 'key:' || p_id, 'allow', NULL,
        format('keys.create for %s/%s', p_tenant, p_user), 'policy');
    IF entry.syscall <> 'keys.create' OR entry.decision <> 'allow' THEN
        RAISE EXCEPTION 'the chain already holds another entry for key %: not made', p_id;
    END IF;
    RETURN created;
END $$;

CREATE FUNCTION api_key_revoke(p_id text, p_by text) RETURNS api_keys
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    revoked api_keys;
    entry audit;
BEGIN
    UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = p_id
    RETURNING * INTO revoked;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- Once per key: revoking it again appends nothing. The kernel's role cannot take the
    -- row's key first (audit_append refuses it), so what comes back is this revocation's.
    entry := audit_chain_append(
        'operator:' || p_by, 'operator', 'keys.revoke/' || p_id, 1, NULL, revoked.tenant, p_by,
        '*', 'keys.revoke', 'key:' || p_id, 'allow', NULL,
        format('keys.revoke for %s/%s', revoked.tenant, revoked.user_name), 'policy');
    IF entry.syscall <> 'keys.revoke' THEN
        RAISE EXCEPTION 'the chain holds another entry keyed as key %''s revocation', p_id;
    END IF;
    RETURN revoked;
END $$;
REVOKE ALL ON FUNCTION api_key_create(text, bytea, text, text, text, text),
    api_key_revoke(text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_key_create(text, bytea, text, text, text, text),
    api_key_revoke(text, text)
TO kernos_operator;

REVOKE INSERT, UPDATE, DELETE ON api_keys FROM kernos_kernel;
GRANT UPDATE (last_used_at) ON api_keys TO kernos_kernel;
GRANT SELECT ON api_keys TO kernos_operator;

-- The rules: read by the kernel, edited by the operator (`kernos policy`, which appends each
-- edit to the chain of the tenant it is for).
REVOKE INSERT, UPDATE, DELETE ON casbin_rule FROM kernos_kernel;
REVOKE USAGE ON SEQUENCE casbin_rule_id_seq FROM kernos_kernel;
GRANT SELECT, INSERT, UPDATE, DELETE ON casbin_rule TO kernos_operator;
GRANT USAGE ON SEQUENCE casbin_rule_id_seq TO kernos_operator;
