-- Tokens per tenant, kept current with every syscall result, and optional per-tenant budgets.

CREATE TABLE tenant_usage (
    tenant         text PRIMARY KEY,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    syscalls       bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_budgets (
    tenant      text PRIMARY KEY,
    max_tokens  bigint NOT NULL CHECK (max_tokens > 0),
    set_at      timestamptz NOT NULL DEFAULT now()
);

-- The tenant of each result, so usage can be rebuilt from the ledger and checked against it.
ALTER TABLE syscall_results ADD COLUMN tenant text;
UPDATE syscall_results s SET tenant = r.tenant FROM runs r WHERE r.run_id = s.run_id;
INSERT INTO tenant_usage (tenant, input_tokens, output_tokens, syscalls)
SELECT tenant, sum(input_tokens), sum(output_tokens), count(*)
FROM syscall_results WHERE tenant IS NOT NULL GROUP BY tenant;

-- What a decision rested on: the policy, the caller's identity, the run having finished, or the
-- tenant's budget. Rows from before this column are policy or identity decisions.
ALTER TABLE audit ADD COLUMN basis text NOT NULL DEFAULT 'policy'
    CHECK (basis IN ('policy', 'identity', 'finished', 'budget'));
ALTER TABLE audit ALTER COLUMN basis DROP DEFAULT;
