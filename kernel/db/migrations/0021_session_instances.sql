-- Cache affinity across runs: the LLM instance that last served each user's session of an agent
-- (the gateway's X-Kernos-Session) on each model, where the session's next run sends its first
-- call.
-- Written by the kernel worker that served the call; read at admission. A hint only: the
-- instance still serves a call on its own queue only for a run or session it served lately.
CREATE TABLE session_instances (
    tenant text NOT NULL,
    user_name text NOT NULL,
    agent text NOT NULL,
    session text NOT NULL,
    model text NOT NULL,
    instance text NOT NULL,
    served_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, user_name, agent, session, model)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON session_instances TO kernos_kernel;
