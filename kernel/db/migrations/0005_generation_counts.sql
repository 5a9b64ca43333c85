-- Servers that stream text without token ids (the `openai` kind) resume a generation by its
-- text; how many tokens it has so far comes from their usage, kept here beside the text.
ALTER TABLE generations ADD COLUMN counted integer NOT NULL DEFAULT 0;
