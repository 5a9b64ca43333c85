-- Files are searchable by meaning (`storage.search`): a text content gets its embedding when a
-- search of its namespace first needs it, once per tenant and content.
ALTER TABLE blobs ADD COLUMN embedding vector(384);
-- Contents that are not text, or are empty, are marked so that no search tries them again.
ALTER TABLE blobs ADD COLUMN searchable boolean;
CREATE INDEX files_live ON files (tenant, agent) WHERE deleted_at IS NULL;
