-- The memory manager: items an agent remembers across runs, with their embeddings (pgvector).
-- Creating the extension needs a superuser where it is not there yet; `kernos up` creates it.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE memories (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    -- `agent/<name>`: an agent's own memory; `shared/<name>`: a named scope that policies open.
    scope       text NOT NULL,
    -- The agent that wrote the item: quotas and eviction count per tenant and agent.
    owner       text NOT NULL,
    content     text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    -- all-MiniLM-L6-v2's 384 dimensions; another embedding model needs a migration of its own.
    embedding   vector(384) NOT NULL,
    -- The syscall that added the item: a retried add finds it instead of adding another.
    written_by  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Last read or written: least recently used items are evicted first.
    used_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memories_scope ON memories (tenant, scope, created_at);
CREATE INDEX memories_owner_lru ON memories (tenant, owner, used_at);
CREATE INDEX memories_metadata ON memories USING gin (metadata jsonb_path_ops);
CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops);
