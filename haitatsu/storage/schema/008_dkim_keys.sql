-- DKIM signing keys (API.md 1.11). The server generates the key pair: RSA 2048 by default, kept
-- as a PKCS#1 PEM private key and a PKIX (SubjectPublicKeyInfo) PEM public key; Ed25519 is our
-- addition (RFC 8463), kept as PKCS#8 and PKIX PEM. Submission signs with the newest active key
-- of the sender's domain. A domain with a key is a "hosted" domain for VERP bounces (API.md 5.2).

CREATE TABLE dkim_keys (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    selector TEXT NOT NULL,
    algorithm TEXT NOT NULL DEFAULT 'rsa',
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (domain, selector)
);

CREATE INDEX dkim_keys_created ON dkim_keys (created_at, id);

CREATE INDEX dkim_keys_domain ON dkim_keys (domain, created_at);
