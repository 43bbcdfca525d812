ALTER TABLE api_keys DROP COLUMN scopes;
DROP TABLE revoked_tokens;
DROP TABLE refresh_tokens;
DROP TABLE authorization_codes;
DROP TABLE signing_keys;
DROP TABLE oauth_clients;
