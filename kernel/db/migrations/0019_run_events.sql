-- What a run is doing, as it happens: the events a client follows (`kernos run`, the gateway's
-- `GET /v1/runs/{id}/events`, `KernosClient.stream`). Numbered per run from 1, in the order
-- their transactions commit (each takes its run's head row until it commits), so a reader that
-- has seen event n has seen every event before it, and resumes after it (`Last-Event-ID`).
-- The triggers are deferred to the commit: a transaction takes a head after every other lock
-- it takes (a tenant's audit chain, a run's row), so heads add no order for locks to deadlock
-- over (an approval decided while its run's next decision is appended, say).
--
-- Written by the database from what the kernel records (decisions, results, approvals, memory
-- and file writes, admission and end: triggers below) and by kernel workers for what is not
-- recorded elsewhere (a generation's text as it grows). Agent code holds no credential here and
-- writes none. Commits wake the followers of a run (`run_followers`) with NOTIFY
-- kernos_run_events, the run's id as payload.

CREATE TABLE run_events (
    run_id  text NOT NULL,
    seq     bigint NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind    text NOT NULL,
    data    jsonb NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE run_event_heads (
    run_id  text PRIMARY KEY,
    last    bigint NOT NULL,
    -- The run's end is written: from then on only a corrected end is (Temporal's word over an
    -- earlier record), so `run.finished` is the last event a follower waits for. What the kernel
    -- records after it (the audit of the end, refusals of syscalls past it) is the audit's.
    ended   boolean NOT NULL DEFAULT false
);

-- The runs a client follows now: only their events notify. A NOTIFY takes, at commit, a lock
-- that every notifying transaction shares (measured: it costs each syscall of 50 parallel runs
-- about a millisecond), so events nobody waits for notify nobody.
CREATE TABLE run_followers (
    run_id  text PRIMARY KEY,
    until   timestamptz NOT NULL
);

CREATE FUNCTION run_event_follow(p_run_id text, p_for_s double precision) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO run_followers AS f (run_id, until)
    VALUES (p_run_id, now() + make_interval(secs => least(p_for_s, 3600)))
    ON CONFLICT (run_id) DO UPDATE SET until = greatest(f.until, EXCLUDED.until);
    IF random() < 0.01 THEN
        DELETE FROM run_followers WHERE until < now();
    END IF;
END $$;
REVOKE ALL ON FUNCTION run_event_follow(text, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_event_follow(text, double precision)
TO kernos_kernel, kernos_operator;

-- Appends one event of an admitted run; its seq. Nothing for a run the kernel has no record of,
-- or past the run's end.
CREATE FUNCTION run_event_append(p_run_id text, p_kind text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    appended bigint;
BEGIN
    IF p_run_id IS NULL OR NOT EXISTS (SELECT 1 FROM runs WHERE run_id = p_run_id) THEN
        RETURN NULL;
    END IF;
    INSERT INTO run_event_heads AS h (run_id, last, ended)
    VALUES (p_run_id, 1, p_kind = 'run.finished')
    ON CONFLICT (run_id) DO UPDATE SET last = h.last + 1, ended = h.ended OR EXCLUDED.ended
        WHERE NOT h.ended OR EXCLUDED.ended
    RETURNING last INTO appended;
    IF appended IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO run_events (run_id, seq, kind, data) VALUES (p_run_id, appended, p_kind, p_data);
    IF EXISTS (SELECT 1 FROM run_followers WHERE run_id = p_run_id AND until > now()) THEN
        PERFORM pg_notify('kernos_run_events', p_run_id);
    END IF;
    RETURN appended;
END $$;
REVOKE ALL ON FUNCTION run_event_append(text, text, jsonb) FROM PUBLIC;
GRANT SELECT ON run_events TO kernos_kernel, kernos_operator;

-- What a kernel worker appends itself: a generation's text from `offset` on (it replaces what
-- an earlier event said from there: a retried attempt regenerates what its crashed one had).
-- Only this kind: the kernel's role cannot write an event that says what the record does not.
CREATE FUNCTION run_event_delta(
    p_run_id text, p_generation text, p_model text, p_offset integer, p_text text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_offset < 0 THEN
        RAISE EXCEPTION 'a delta''s offset is a position in the text: % is not', p_offset;
    END IF;
    -- Deltas are best-effort: the text is the syscall's result, recorded by Temporal.
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN run_event_append(p_run_id, 'llm.delta', jsonb_build_object(
        'generation', p_generation, 'model', p_model, 'offset', p_offset, 'text', p_text));
END $$;
REVOKE ALL ON FUNCTION run_event_delta(text, text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_event_delta(text, text, text, integer, text) TO kernos_kernel;

CREATE FUNCTION run_event_admitted() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM run_event_append(NEW.run_id, 'run.started', jsonb_build_object(
        'agent', NEW.agent, 'tenant', NEW.tenant, 'user', NEW.user_name, 'model', NEW.model));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER run_events_admitted AFTER INSERT ON runs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION run_event_admitted();

-- The end as the kernel records it (and again if Temporal's word changes what was recorded).
CREATE FUNCTION run_event_ended() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM run_event_append(NEW.run_id, 'run.finished', jsonb_build_object(
        'status', NEW.status, 'error', NEW.error, 'input_tokens', NEW.input_tokens,
        'output_tokens', NEW.output_tokens));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER run_events_ended AFTER UPDATE OF status, finished_at ON runs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.finished_at IS NOT NULL
          AND (OLD.finished_at IS NULL OR OLD.status IS DISTINCT FROM NEW.status))
    EXECUTE FUNCTION run_event_ended();

-- Each decision on one of the run's syscalls; a refusal with its reason (what agent code is
-- told), an allowed one without (the rule that allowed it is the auditor's to read).
CREATE FUNCTION run_event_decided() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM run_event_append(NEW.run_id, 'syscall.decided', jsonb_build_object(
        'syscall', NEW.syscall, 'resource', NEW.resource, 'decision', NEW.decision,
        'reason', CASE WHEN NEW.decision = 'deny' THEN NEW.reason END,
        'activity_id', NEW.activity_id, 'attempt', NEW.attempt));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER run_events_decided AFTER INSERT ON audit
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.run_id IS NOT NULL)
    EXECUTE FUNCTION run_event_decided();

CREATE FUNCTION run_event_finished() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM run_event_append(NEW.run_id, 'syscall.finished', jsonb_build_object(
        'syscall', NEW.syscall, 'activity_id', NEW.activity_id, 'attempt', NEW.attempt,
        'error_type', NEW.error_type, 'input_tokens', NEW.input_tokens,
        'output_tokens', NEW.output_tokens, 'duration_ms', NEW.duration_ms));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER run_events_finished AFTER INSERT ON syscall_results
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION run_event_finished();

CREATE FUNCTION run_event_approval() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM run_event_append(NEW.run_id, 'approval.requested', jsonb_build_object(
            'approval_id', NEW.id, 'syscall', NEW.syscall, 'resource', NEW.resource,
            'expires_at', NEW.expires_at));
    ELSIF NEW.status <> 'pending' THEN
        PERFORM run_event_append(NEW.run_id, 'approval.decided', jsonb_build_object(
            'approval_id', NEW.id, 'syscall', NEW.syscall, 'resource', NEW.resource,
            'status', NEW.status, 'decided_by', NEW.decided_by, 'reason', NEW.reason));
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER run_events_approval_requested AFTER INSERT ON approvals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION run_event_approval();
CREATE CONSTRAINT TRIGGER run_events_approval_decided AFTER UPDATE OF status ON approvals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION run_event_approval();

-- Memory items and file versions name the syscall that wrote them (`<run>/<execution>/<activity>`).
CREATE FUNCTION run_event_memory() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM run_event_append(split_part(NEW.written_by, '/', 1), 'memory.written',
        jsonb_build_object('id', NEW.id, 'scope', NEW.scope));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER run_events_memory AFTER INSERT ON memories
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION run_event_memory();

CREATE FUNCTION run_event_file() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM run_event_append(split_part(NEW.written_by, '/', 1), 'file.written',
        jsonb_build_object('path', NEW.path, 'version', NEW.version, 'size', NEW.size,
                           'action', NEW.action));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER run_events_file AFTER INSERT ON file_versions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION run_event_file();
