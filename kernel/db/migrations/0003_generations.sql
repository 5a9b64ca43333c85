-- Generations suspended at the end of a round-robin time slice. A continuation names the row;
-- the workflow's history carries that name, not the prompt or the tokens so far.
CREATE TABLE generations (
    id               text PRIMARY KEY,
    run_id           text NOT NULL,
    model            text NOT NULL,
    request          jsonb NOT NULL,
    tokens           integer[] NOT NULL,
    text             text NOT NULL,
    -- Output tokens already charged to the run by completed syscalls, and the activity that
    -- wrote this state: a retry of that activity charges from `charged_before` again.
    charged_before   bigint NOT NULL,
    written_by       text NOT NULL,
    slices           integer NOT NULL DEFAULT 1,
    finished         boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX generations_run ON generations (run_id);
