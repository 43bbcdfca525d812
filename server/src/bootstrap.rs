//! First start: on a database without the `root` organization, create it,
//! its `admin` service account and one API key, in one transaction. The key
//! is printed once to stderr and, when asked, written to a 0600 file.

use std::path::Path;

use crate::{
    api::api_keys::new_key_row,
    domain::{
        Error, Result,
        api_key::SecretKey,
        authz::{ROOT_ORG, Role, Roles},
        names::{PrincipalKind, PrincipalName, generate_id},
        now_micros,
    },
    store::{
        Store, api_keys,
        organizations::{self, OrganizationRow},
        principals::{self, ServiceAccountRow},
    },
};

/// The admin service account of the root organization.
pub const ADMIN_SA: &str = "admin";

/// Creates the root organization and admin key if the database has none.
/// Returns the key when this call created it. Several replicas starting at
/// once race safely: the loser sees ALREADY_EXISTS and returns `None`.
pub async fn ensure_root(store: &Store) -> Result<Option<SecretKey>> {
    let result = store
        .db
        .write(|conn| {
            if organizations::load(conn, ROOT_ORG)?.is_some() {
                return Ok(None);
            }
            let now = now_micros();
            organizations::insert(
                conn,
                &OrganizationRow {
                    org_id: ROOT_ORG.into(),
                    uid: generate_id(),
                    display_name: "Root".into(),
                    state: organizations::ACTIVE,
                    create_time: now,
                    update_time: now,
                    revision: 1,
                },
            )?;
            let admin = ServiceAccountRow {
                org_id: ROOT_ORG.into(),
                sa_id: ADMIN_SA.into(),
                uid: generate_id(),
                display_name: "Platform admin".into(),
                description: "Created at first start.".into(),
                state: principals::ACTIVE,
                roles: Roles::new(vec![Role::Admin]).to_stored(),
                create_time: now,
                update_time: now,
                revision: 1,
            };
            principals::insert_service_account(conn, &admin)?;
            let (mut row, secret) = new_key_row(&admin_name(), "bootstrap".into(), None);
            row.owner_uid = admin.uid;
            api_keys::insert(conn, &row)?;
            Ok(Some(secret))
        })
        .await;
    match result {
        Err(Error::AlreadyExists { .. }) => Ok(None),
        other => other,
    }
}

/// `organizations/root/serviceAccounts/admin`.
pub fn admin_name() -> PrincipalName {
    PrincipalName {
        org: ROOT_ORG.into(),
        kind: PrincipalKind::ServiceAccount,
        id: ADMIN_SA.into(),
    }
}

/// Prints the key once and writes it to `file` (mode 0600) when given.
pub fn announce(key: &SecretKey, file: Option<&Path>) -> std::io::Result<()> {
    eprintln!("admin api key: {}", key.expose());
    if let Some(path) = file {
        write_secret(path, key.expose())?;
        tracing::info!(path = %path.display(), "bootstrap key written");
    }
    Ok(())
}

/// Writes a secret readable by the owner only, replacing any old file.
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{secret}")
}

/// Mints another key for an existing service account (`admin create-key`).
pub async fn create_key(
    store: &Store,
    owner: &PrincipalName,
    display_name: String,
) -> Result<SecretKey> {
    let (row, secret) = new_key_row(owner, display_name, None);
    store.create_api_key(row, |_| Ok(())).await?;
    Ok(secret)
}
