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
        relay_time -> Nullable<BigInt>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    service_accounts,
    api_keys,
    outbox
);
