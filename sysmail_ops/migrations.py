"""Numbered schema migrations. Append only: never edit one that has shipped."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "accounts",
        """
        CREATE TABLE accounts (
            name VARCHAR PRIMARY KEY,
            description VARCHAR,
            kind VARCHAR NOT NULL,
            from_address VARCHAR NOT NULL,
            display_name VARCHAR,
            login VARCHAR NOT NULL,
            password_enc VARCHAR,
            password_env VARCHAR,
            smtp_host VARCHAR NOT NULL,
            smtp_port INTEGER NOT NULL,
            smtp_security VARCHAR NOT NULL,
            ca_bundle VARCHAR,
            allow_insecure_auth BOOLEAN NOT NULL DEFAULT false,
            imap_host VARCHAR,
            imap_port INTEGER,
            imap_security VARCHAR,
            sent_archiving BOOLEAN NOT NULL,
            received_archiving BOOLEAN NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );
        CREATE TABLE account_tests (
            account VARCHAR NOT NULL,
            tested_at TIMESTAMP NOT NULL,
            ok BOOLEAN NOT NULL,
            step VARCHAR NOT NULL,
            code INTEGER,
            message VARCHAR NOT NULL,
            greeting VARCHAR,
            sent_to VARCHAR,
            duration_ms DOUBLE NOT NULL
        );
        """,
    ),
]
