-- Conversations: an agent's messages, kept by the kernel and referenced from workflow state, so
-- a long conversation is not copied into every syscall. Compaction replaces the oldest turns
-- in the model's context with a summary; the originals stay, marked with the summary's seq.
CREATE TABLE conversations (
    id          text PRIMARY KEY,
    run_id      text NOT NULL,
    tenant      text NOT NULL,
    agent       text NOT NULL,
    model       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_run ON conversations (run_id);

CREATE TABLE conversation_messages (
    conversation_id  text NOT NULL REFERENCES conversations (id),
    seq              integer NOT NULL,
    role             text NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content          text NOT NULL,
    is_summary       boolean NOT NULL DEFAULT false,
    summarized_by    integer,
    -- The syscall that wrote the message, and which of its messages it is: a retried syscall
    -- finds its messages already there and writes none again.
    written_by       text NOT NULL,
    part             integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (conversation_id, written_by, part)
);
