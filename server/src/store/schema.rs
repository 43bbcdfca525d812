//! Diesel table definitions, shared by SQLite and PostgreSQL. Kept to the
//! SQL types diesel's `MultiConnection` supports on both (no BLOB, no BOOL):
//! digests are hex text, timestamps microseconds.
#![expect(
    missing_docs,
    reason = "diesel's table! macro generates these items; the SQL in migrations/ documents them"
)]

diesel::table! {
    organizations (org_id) {
        org_id -> Text,
        uid -> Text,
        display_name -> Text,
        state -> SmallInt,
        create_time -> BigInt,
        update_time -> BigInt,
        revision -> BigInt,
    }
}

diesel::table! {
    users (org_id, user_id) {
        org_id -> Text,
        user_id -> Text,
        uid -> Text,
        display_name -> Text,
        email -> Text,
        state -> SmallInt,
        roles -> Text,
        password_hash -> Nullable<Text>,
        create_time -> BigInt,
        update_time -> BigInt,
        revision -> BigInt,
    }
}

diesel::table! {
    service_accounts (org_id, sa_id) {
        org_id -> Text,
        sa_id -> Text,
        uid -> Text,
        display_name -> Text,
        description -> Text,
        state -> SmallInt,
        roles -> Text,
        create_time -> BigInt,
        update_time -> BigInt,
        revision -> BigInt,
    }
}

diesel::table! {
    api_keys (org_id, key_id) {
        org_id -> Text,
        key_id -> Text,
        owner_kind -> SmallInt,
        owner_id -> Text,
        owner_uid -> Text,
        creator -> Text,
        role_cap -> Nullable<Text>,
        display_name -> Text,
        digest -> Text,
        state -> SmallInt,
        expire_time -> Nullable<BigInt>,
        create_time -> BigInt,
        revoke_time -> Nullable<BigInt>,
        revision -> BigInt,
        scopes -> Text,
        last_used_time -> Nullable<BigInt>,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        org_id -> Text,
        event_type -> Text,
        resource -> Text,
        payload -> Text,
        create_time -> BigInt,
        actor -> Text,
        request_id -> Text,
    }
}

diesel::table! {
    jobs (id) {
        id -> BigInt,
        kind -> Text,
        payload -> Text,
        unique_key -> Nullable<Text>,
        priority -> SmallInt,
        state -> SmallInt,
        run_after -> BigInt,
        attempts -> Integer,
        max_attempts -> Integer,
        last_error -> Nullable<Text>,
        lease_owner -> Nullable<Text>,
        lease_expiry -> Nullable<BigInt>,
        create_time -> BigInt,
        update_time -> BigInt,
    }
}

diesel::table! {
    /// The ids of the outbox rows the relay has not published yet.
    outbox_pending (id) {
        id -> BigInt,
    }
}

diesel::table! {
    oauth_clients (org_id, client_id) {
        org_id -> Text,
        client_id -> Text,
        uid -> Text,
        display_name -> Text,
        description -> Text,
        client_type -> SmallInt,
        state -> SmallInt,
        redirect_uris -> Text,
        grant_types -> Text,
        scopes -> Text,
        audiences -> Text,
        access_token_ttl -> BigInt,
        refresh_token_ttl -> BigInt,
        service_account -> Nullable<Text>,
        signing_algorithm -> Text,
        secret_digest -> Nullable<Text>,
        previous_secret_digest -> Nullable<Text>,
        previous_secret_expire_time -> Nullable<BigInt>,
        create_time -> BigInt,
        update_time -> BigInt,
        revision -> BigInt,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        algorithm -> Text,
        public_jwk -> Text,
        private_key -> Text,
        kek_id -> Text,
        create_time -> BigInt,
        activate_time -> BigInt,
        deactivate_time -> Nullable<BigInt>,
        retire_time -> Nullable<BigInt>,
    }
}

diesel::table! {
    authorization_codes (digest) {
        digest -> Text,
        org_id -> Text,
        client_id -> Text,
        user_id -> Text,
        redirect_uri -> Text,
        scope -> Text,
        audience -> Text,
        nonce -> Nullable<Text>,
        code_challenge -> Nullable<Text>,
        auth_time -> BigInt,
        create_time -> BigInt,
        expire_time -> BigInt,
        used_time -> Nullable<BigInt>,
        family_id -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (digest) {
        digest -> Text,
        family_id -> Text,
        org_id -> Text,
        client_id -> Text,
        subject_kind -> SmallInt,
        subject_id -> Text,
        scope -> Text,
        audience -> Text,
        nonce -> Nullable<Text>,
        auth_time -> BigInt,
        create_time -> BigInt,
        expire_time -> BigInt,
        used_time -> Nullable<BigInt>,
        revoke_time -> Nullable<BigInt>,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expire_time -> BigInt,
        revoke_time -> BigInt,
    }
}

diesel::table! {
    rate_limit_policies (org_id, policy_id) {
        org_id -> Text,
        policy_id -> Text,
        uid -> Text,
        display_name -> Text,
        method -> Nullable<Text>,
        principal -> Nullable<Text>,
        api_key -> Nullable<Text>,
        oauth_client -> Nullable<Text>,
        headers -> Text,
        descriptors -> Text,
        rate_limit -> Nullable<BigInt>,
        rate_period -> Nullable<SmallInt>,
        rate_burst -> Nullable<BigInt>,
        quota_limit -> Nullable<BigInt>,
        quota_period -> Nullable<SmallInt>,
        algorithm -> SmallInt,
        shadow -> SmallInt,
        failure_mode -> SmallInt,
        key_by -> SmallInt,
        create_time -> BigInt,
        update_time -> BigInt,
        revision -> BigInt,
    }
}

diesel::table! {
    usage_minutes (org_id, bucket_start, principal, api_key, method) {
        org_id -> Text,
        bucket_start -> BigInt,
        principal -> Text,
        api_key -> Text,
        method -> Text,
        calls -> BigInt,
        refused -> BigInt,
        cost -> BigInt,
    }
}

diesel::table! {
    webhooks (org_id, webhook_id) {
        org_id -> Text,
        webhook_id -> Text,
        uid -> Text,
        display_name -> Text,
        description -> Text,
        url -> Text,
        event_types -> Text,
        state -> SmallInt,
        secret_sealed -> Text,
        previous_secret_sealed -> Nullable<Text>,
        previous_secret_expire_time -> Nullable<BigInt>,
        create_time -> BigInt,
        update_time -> BigInt,
        revision -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (org_id, webhook_id, event_id) {
        org_id -> Text,
        webhook_id -> Text,
        event_id -> BigInt,
        event_type -> Text,
        status -> SmallInt,
        attempts -> Integer,
        last_response_code -> Integer,
        last_error -> Text,
        last_latency_micros -> BigInt,
        body -> Text,
        create_time -> BigInt,
        last_attempt_time -> Nullable<BigInt>,
        next_attempt_time -> BigInt,
        trace_parent -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    service_accounts,
    api_keys,
    outbox,
    outbox_pending,
    jobs,
    oauth_clients,
    signing_keys,
    authorization_codes,
    refresh_tokens,
    revoked_tokens,
    rate_limit_policies,
    webhooks,
    webhook_deliveries
);
