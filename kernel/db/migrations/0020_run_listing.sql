-- A user's own runs, newest first (the gateway's `GET /v1/runs`), and an API key's runs still
-- going (its limit on running runs, checked at each admission).
CREATE INDEX runs_user_created ON runs (user_name, created_at DESC);
CREATE INDEX runs_key_running ON runs (api_key_id) WHERE finished_at IS NULL;
