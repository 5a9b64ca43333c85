-- Past conversations become searchable memory (`memory.search(scope="conversations")`): each
-- turn gets an embedding when a search of its agent first needs it.
ALTER TABLE conversation_messages ADD COLUMN embedding vector(384);
CREATE INDEX conversation_messages_embedding ON conversation_messages
    USING hnsw (embedding vector_cosine_ops) WHERE embedding IS NOT NULL;
CREATE INDEX conversations_owner ON conversations (tenant, agent);
