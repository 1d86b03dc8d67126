-- Citadel schema, version 9 (PostgreSQL): people who sign in through an OIDC
-- provider, linked to the Citadel user made for them on first sign-in.
-- Keep in step with ../sqlite/0009_external_identities.sql.
CREATE TABLE external_identities (
    provider    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
