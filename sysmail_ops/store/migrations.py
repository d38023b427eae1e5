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
    (
        2,
        "templates, send log, deferred queue, archive",
        """
        CREATE TABLE templates (
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            object_type VARCHAR NOT NULL,
            description VARCHAR,
            subject VARCHAR NOT NULL,
            html VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            text_derived BOOLEAN NOT NULL,
            html_inlined VARCHAR,
            fields VARCHAR[],
            builtin BOOLEAN NOT NULL DEFAULT false,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (name, version)
        );
        CREATE SEQUENCE send_log_seq START 1;
        CREATE TABLE send_log (
            id BIGINT NOT NULL DEFAULT nextval('send_log_seq'),
            batch_id VARCHAR NOT NULL,
            seq INTEGER NOT NULL,
            delivery_key VARCHAR,
            message_id VARCHAR NOT NULL,
            account VARCHAR NOT NULL,
            template VARCHAR NOT NULL,
            template_version INTEGER NOT NULL,
            use_case VARCHAR NOT NULL,
            related_type VARCHAR,
            related_id VARCHAR,
            recipient VARCHAR NOT NULL,
            role VARCHAR NOT NULL,
            subject VARCHAR,
            status VARCHAR NOT NULL,
            smtp_phase VARCHAR,
            smtp_code INTEGER,
            smtp_reply VARCHAR,
            attempt INTEGER NOT NULL,
            queued_at TIMESTAMP NOT NULL,
            sent_at TIMESTAMP,
            duration_ms DOUBLE,
            size_bytes INTEGER,
            next_attempt_at TIMESTAMP
        );
        CREATE INDEX send_log_key ON send_log (delivery_key);
        CREATE TABLE deferred (
            message_id VARCHAR NOT NULL,
            recipient VARCHAR NOT NULL,
            delivery_key VARCHAR,
            account VARCHAR NOT NULL,
            eml_path VARCHAR NOT NULL,
            mail_from VARCHAR NOT NULL,
            attempts INTEGER NOT NULL,
            first_attempt_at TIMESTAMP NOT NULL,
            next_attempt_at TIMESTAMP NOT NULL,
            last_reply VARCHAR,
            context VARCHAR NOT NULL,
            PRIMARY KEY (message_id, recipient)
        );
        CREATE TABLE archive (
            id VARCHAR PRIMARY KEY,
            message_id VARCHAR NOT NULL,
            account VARCHAR NOT NULL,
            direction VARCHAR NOT NULL,
            from_addr VARCHAR,
            to_addrs VARCHAR[],
            cc_addrs VARCHAR[],
            subject VARCHAR,
            date TIMESTAMP NOT NULL,
            related_type VARCHAR,
            related_id VARCHAR,
            size_bytes INTEGER,
            attachments VARCHAR[],
            eml_path VARCHAR NOT NULL,
            delivery_key VARCHAR,
            batch_id VARCHAR
        );
        """,
    ),
    (
        3,
        "account sending settings: rate limit, List-Unsubscribe",
        """
        ALTER TABLE accounts ADD COLUMN rate_limit_per_minute INTEGER;
        ALTER TABLE accounts ADD COLUMN unsubscribe_mailto VARCHAR;
        ALTER TABLE accounts ADD COLUMN unsubscribe_url VARCHAR;
        """,
    ),
    (
        4,
        "archive bundles: many raw messages in one file per batch",
        """
        ALTER TABLE archive ADD COLUMN eml_offset BIGINT;
        ALTER TABLE archive ADD COLUMN eml_length BIGINT;
        """,
    ),
    (
        5,
        "report subscriptions, their slot claims and run history",
        """
        CREATE TABLE subscriptions (
            name VARCHAR PRIMARY KEY,
            notebook VARCHAR NOT NULL,
            recipients VARCHAR NOT NULL,
            cron VARCHAR NOT NULL,
            timezone VARCHAR NOT NULL,
            account VARCHAR NOT NULL,
            template VARCHAR NOT NULL,
            owner VARCHAR NOT NULL,
            parameters VARCHAR NOT NULL,
            formats VARCHAR[] NOT NULL,
            tables VARCHAR[],
            skip_if_empty BOOLEAN NOT NULL,
            enabled BOOLEAN NOT NULL,
            timeout DOUBLE NOT NULL,
            description VARCHAR,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );
        CREATE TABLE subscription_claims (
            subscription VARCHAR NOT NULL,
            slot TIMESTAMP NOT NULL,
            claimed_at TIMESTAMP NOT NULL,
            claimed_by VARCHAR NOT NULL,
            finished_at TIMESTAMP,
            PRIMARY KEY (subscription, slot)
        );
        CREATE TABLE subscription_runs (
            id VARCHAR PRIMARY KEY,
            subscription VARCHAR NOT NULL,
            slot TIMESTAMP NOT NULL,
            parameters VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            kernel_seconds DOUBLE,
            execute_seconds DOUBLE,
            output_path VARCHAR,
            error VARCHAR,
            failing_cell INTEGER,
            row_count BIGINT,
            recipients INTEGER NOT NULL,
            delivered INTEGER,
            deferred INTEGER,
            failed INTEGER,
            trigger VARCHAR NOT NULL
        );
        """,
    ),
    (
        6,
        "workflow notification rules, the events received and the role directory",
        """
        CREATE TABLE workflow_rules (
            name VARCHAR PRIMARY KEY,
            flow_type VARCHAR NOT NULL,
            flow_name VARCHAR NOT NULL,
            event VARCHAR NOT NULL,
            condition VARCHAR,
            account VARCHAR NOT NULL,
            template VARCHAR NOT NULL,
            recipients VARCHAR[] NOT NULL,
            enabled BOOLEAN NOT NULL,
            description VARCHAR,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );
        CREATE SEQUENCE workflow_events_seq START 1;
        CREATE TABLE workflow_events (
            id BIGINT NOT NULL DEFAULT nextval('workflow_events_seq') PRIMARY KEY,
            event_id VARCHAR,
            flow_type VARCHAR,
            flow_name VARCHAR,
            event VARCHAR,
            object_type VARCHAR,
            object_id VARCHAR,
            occurred_at TIMESTAMP,
            received_at TIMESTAMP NOT NULL,
            source VARCHAR,
            record VARCHAR,
            status VARCHAR NOT NULL,
            matched_rules VARCHAR[] NOT NULL,
            error VARCHAR,
            sends VARCHAR NOT NULL
        );
        CREATE INDEX workflow_events_event_id ON workflow_events (event_id);
        CREATE TABLE role_directory (
            role VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            address VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        );
        """,
    ),
    (
        7,
        "workspace settings, the suppression list and survey responses",
        """
        CREATE TABLE settings (
            key VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );
        CREATE TABLE suppression (
            address VARCHAR PRIMARY KEY,
            reason VARCHAR NOT NULL,
            source VARCHAR,
            created_at TIMESTAMP NOT NULL
        );
        CREATE TABLE survey_responses (
            campaign VARCHAR NOT NULL,
            contact VARCHAR NOT NULL,
            email VARCHAR NOT NULL,
            score INTEGER NOT NULL,
            comment VARCHAR,
            answers INTEGER NOT NULL,
            first_answered_at TIMESTAMP NOT NULL,
            answered_at TIMESTAMP NOT NULL,
            PRIMARY KEY (campaign, contact)
        );
        """,
    ),
    (
        8,
        "campaigns: follow-ups and satisfaction surveys, and who each was sent to",
        """
        CREATE TABLE campaigns (
            name VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            account VARCHAR NOT NULL,
            template VARCHAR NOT NULL,
            reminder_template VARCHAR,
            settings VARCHAR NOT NULL,
            description VARCHAR,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );
        CREATE TABLE campaign_members (
            campaign VARCHAR NOT NULL,
            contact VARCHAR NOT NULL,
            email VARCHAR NOT NULL,
            record VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            token_expires_at TIMESTAMP,
            added_at TIMESTAMP NOT NULL,
            sent_at TIMESTAMP,
            reminded_at TIMESTAMP,
            reminder_status VARCHAR,
            PRIMARY KEY (campaign, contact)
        );
        """,
    ),
    (
        9,
        "the audit trail: who changed which configuration, when, from where (store.audit)",
        """
        CREATE SEQUENCE audit_seq START 1;
        CREATE TABLE audit (
            id BIGINT NOT NULL DEFAULT nextval('audit_seq') PRIMARY KEY,
            changed_at TIMESTAMP NOT NULL,
            actor VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            object_kind VARCHAR NOT NULL,
            object_name VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            changes VARCHAR NOT NULL,
            summary VARCHAR NOT NULL
        );
        CREATE INDEX audit_changed_at ON audit (changed_at);
        """,
    ),
    (
        10,
        "accounts: message size limit, signature (HTML, text, auto-append) and DKIM keys",
        """
        ALTER TABLE accounts ADD COLUMN max_message_bytes BIGINT;
        ALTER TABLE accounts ADD COLUMN signature_html VARCHAR;
        ALTER TABLE accounts ADD COLUMN signature_text VARCHAR;
        ALTER TABLE accounts ADD COLUMN signature_auto BOOLEAN DEFAULT TRUE;
        ALTER TABLE accounts ADD COLUMN dkim_domain VARCHAR;
        ALTER TABLE accounts ADD COLUMN dkim_rsa_selector VARCHAR;
        ALTER TABLE accounts ADD COLUMN dkim_rsa_key_enc VARCHAR;
        ALTER TABLE accounts ADD COLUMN dkim_ed25519_selector VARCHAR;
        ALTER TABLE accounts ADD COLUMN dkim_ed25519_key_enc VARCHAR;
        """,
    ),
    (
        11,
        "accounts: auth method (password, none, oauth2), the OAuth2 client and encrypted tokens",
        """
        ALTER TABLE accounts ADD COLUMN auth VARCHAR DEFAULT 'password';
        UPDATE accounts SET auth = 'none' WHERE password_enc IS NULL AND password_env IS NULL;
        ALTER TABLE accounts ADD COLUMN oauth_provider VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_flow VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_client_id VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_tenant VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_endpoint VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_scopes VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_client_secret_enc VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_key_enc VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_token_enc VARCHAR;
        ALTER TABLE accounts ADD COLUMN oauth_authorized_at TIMESTAMP;
        ALTER TABLE accounts ADD COLUMN oauth_authorized_as VARCHAR;
        """,
    ),
    (
        12,
        "received archiving: IMAP fetch state and status, received-mail columns, bounces",
        """
        ALTER TABLE accounts ADD COLUMN imap_login VARCHAR;
        ALTER TABLE accounts ADD COLUMN imap_password_enc VARCHAR;
        ALTER TABLE archive ADD COLUMN folder VARCHAR;
        ALTER TABLE archive ADD COLUMN uidvalidity BIGINT;
        ALTER TABLE archive ADD COLUMN uid BIGINT;
        ALTER TABLE archive ADD COLUMN in_reply_to VARCHAR;
        ALTER TABLE archive ADD COLUMN ref_ids VARCHAR[];
        ALTER TABLE archive ADD COLUMN thread_id VARCHAR;
        ALTER TABLE archive ADD COLUMN reply_to_id VARCHAR;
        ALTER TABLE archive ADD COLUMN body_text VARCHAR;
        ALTER TABLE archive ADD COLUMN attachment_sizes BIGINT[];
        ALTER TABLE archive ADD COLUMN content_hash VARCHAR;
        ALTER TABLE archive ADD COLUMN parse_error VARCHAR;
        ALTER TABLE archive ADD COLUMN fetched_at TIMESTAMP;
        CREATE INDEX archive_message_id ON archive (message_id);
        CREATE TABLE imap_folders (
            account VARCHAR NOT NULL,
            folder VARCHAR NOT NULL,
            uidvalidity BIGINT NOT NULL,
            last_uid BIGINT NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (account, folder)
        );
        CREATE TABLE imap_status (
            account VARCHAR PRIMARY KEY,
            last_fetch_at TIMESTAMP,
            last_ok_at TIMESTAMP,
            last_fetched INTEGER,
            total_fetched BIGINT NOT NULL DEFAULT 0,
            last_error VARCHAR,
            last_error_at TIMESTAMP
        );
        CREATE TABLE bounces (
            archive_id VARCHAR NOT NULL,
            account VARCHAR NOT NULL,
            recipient VARCHAR NOT NULL,
            hard BOOLEAN NOT NULL,
            status VARCHAR,
            diagnostic VARCHAR,
            detector VARCHAR NOT NULL,
            original_message_id VARCHAR,
            log_id BIGINT,
            delivery_key VARCHAR,
            received_at TIMESTAMP NOT NULL,
            PRIMARY KEY (archive_id, recipient)
        );
        """,
    ),
    (
        13,
        "subscriptions: the locale their reports write numbers and dates in (en, de, zh...)",
        """
        ALTER TABLE subscriptions ADD COLUMN locale VARCHAR NOT NULL DEFAULT 'en';
        """,
    ),
    (
        14,
        "HTTP event intake: sources (hashed bearer tokens) and the durable intake queue",
        """
        CREATE TABLE event_sources (
            name VARCHAR PRIMARY KEY,
            token_hash VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            revoked_at TIMESTAMP
        );
        CREATE SEQUENCE event_intake_seq START 1;
        CREATE TABLE event_intake (
            id BIGINT NOT NULL DEFAULT nextval('event_intake_seq'),
            source VARCHAR NOT NULL,
            event_id VARCHAR NOT NULL,
            body VARCHAR NOT NULL,
            received_at TIMESTAMP NOT NULL,
            state VARCHAR NOT NULL,
            status VARCHAR,
            result VARCHAR,
            done_at TIMESTAMP,
            UNIQUE (source, event_id)
        );
        """,
    ),
]
