-- Policies in PostgreSQL ([policy] store = "database"): the table of Casbin's SQLAlchemy adapter,
-- created here with the rest of the schema. Any change to it, by `kernos policy` or by hand,
-- notifies every kernel worker, which reloads its rules without a restart.

CREATE TABLE casbin_rule (
    id     serial PRIMARY KEY,
    ptype  varchar(255),
    v0     varchar(255),
    v1     varchar(255),
    v2     varchar(255),
    v3     varchar(255),
    v4     varchar(255),
    v5     varchar(255)
);

CREATE FUNCTION casbin_rule_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kernos_policy', TG_OP);
    RETURN NULL;
END $$;
CREATE TRIGGER casbin_rule_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON casbin_rule
    FOR EACH STATEMENT EXECUTE FUNCTION casbin_rule_changed();
