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
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Vectors stay in the row: an item's row is past PostgreSQL's 2 KB TOAST threshold with its
-- content, and a TOASTed vector costs each distance a lookup in the TOAST table (measured: a
-- scope of 1,000 items read 10,000 buffers instead of 1,000). The content is moved out instead.
ALTER TABLE memories ALTER COLUMN embedding SET STORAGE PLAIN;
CREATE INDEX memories_scope ON memories (tenant, scope, created_at);
CREATE INDEX memories_owner ON memories (tenant, owner);
CREATE INDEX memories_metadata ON memories USING gin (metadata jsonb_path_ops);
CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops);

-- When each item was last read or written: least recently used items are evicted first. Kept
-- apart from `memories` because every search marks what it found, and an update of a row of
-- `memories` would also write its HNSW index entry (measured: 51 ms p50 per search at 100,000
-- items with the mark in `memories`).
CREATE TABLE memory_use (
    id          uuid PRIMARY KEY REFERENCES memories (id) ON DELETE CASCADE,
    tenant      text NOT NULL,
    owner       text NOT NULL,
    used_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memory_use_lru ON memory_use (tenant, owner, used_at);
