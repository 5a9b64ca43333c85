-- A run keeps at most 64 requests waiting for a human at once. Any agent may ask for approvals
-- of its own tools (`approval.ask`), each with other arguments a new row in every approver's
-- list; past the cap the next request is refused (the kernel's AccessDenied, audited) until
-- one is decided or expires. Requests of one run are counted one at a time.
CREATE OR REPLACE FUNCTION approval_request(
    p_id uuid, p_run_id text, p_syscall text, p_resource text, p_request jsonb,
    p_input_sha256 bytea, p_rule text, p_timeout_s double precision
) RETURNS approvals LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    run runs;
    created approvals;
    waiting integer;
BEGIN
    SELECT * INTO run FROM runs WHERE run_id = p_run_id AND finished_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % is not a live admitted run: it asks for no approval', p_run_id;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('approval_request/' || p_run_id, 0));
    SELECT count(*) INTO waiting FROM approvals
    WHERE run_id = p_run_id AND status = 'pending' AND expires_at >= now();
    IF waiting >= 64 THEN
        RAISE EXCEPTION 'run % has % requests waiting for a human''s approval, the most a run '
            'may: it asks for no more until one is decided', p_run_id, waiting
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    INSERT INTO approvals (id, run_id, tenant, user_name, agent, syscall, resource, request,
                           input_sha256, rule, expires_at)
    VALUES (p_id, run.run_id, run.tenant, run.user_name, run.agent, p_syscall, p_resource,
            p_request, p_input_sha256, p_rule, now() + make_interval(secs => p_timeout_s))
    RETURNING * INTO created;
    RETURN created;
END $$;
