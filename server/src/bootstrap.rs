//! First start: on a database without the `root` organization, create it,
//! its `admin` service account and one API key, in one transaction. The key
//! is printed once to stderr and, when asked, written to a 0600 file.

use std::path::Path;

use tollgate::tollgate::v1::{organization, service_account};

use crate::{
    domain::{
        Error, Result,
        api_key::SecretKey,
        authz::{ROOT_ORG, Role, Roles},
        names::{OrgName, PrincipalKind, PrincipalName},
    },
    events::WriteContext,
    store::{
        Store, Tx,
        api_keys::{self, NewApiKey},
        organizations::{self, NewOrganization, OrganizationChanges, OrganizationRow},
        principals::{
            self, NewServiceAccount, PrincipalRow, ServiceAccountChanges, ServiceAccountRow,
        },
        versioned::{Lock, Versioned},
    },
};

/// The admin service account of the root organization.
pub const ADMIN_SA: &str = "admin";

/// Creates the root organization and admin key if the database has none.
/// Returns the key when this call created it. Several replicas starting at
/// once race safely: the loser sees ALREADY_EXISTS and returns `None`.
pub async fn ensure_root(store: &Store) -> Result<Option<SecretKey>> {
    let result = store
        .write(&WriteContext::system("bootstrap"), |tx| {
            if organizations::load(tx.conn, ROOT_ORG)?.is_some() {
                return Ok(None);
            }
            organizations::insert(tx, root_org())?;
            let admin = principals::insert_service_account(tx, admin_account())?;
            Ok(Some(mint_admin_key(tx, admin.uid, "bootstrap")?))
        })
        .await;
    match result {
        Err(Error::AlreadyExists { .. }) => Ok(None),
        other => other,
    }
}

/// Gives an operator the platform back (`tollgate admin recover-root`,
/// offline): makes sure `root` exists and is active, and that its `admin`
/// service account exists, is active and holds `admin`, then mints it a
/// key. Each repair appends its event, with `system` as the actor.
pub async fn recover_root(store: &Store) -> Result<SecretKey> {
    store
        .write(&WriteContext::system("recover-root"), |tx| {
            let root = OrgName {
                org: ROOT_ORG.into(),
            };
            match OrganizationRow::load(tx.conn, &root, Lock::Update)? {
                None => {
                    organizations::insert(tx, root_org())?;
                }
                Some(row) if !row.is_active() => {
                    let active = OrganizationChanges {
                        display_name: None,
                        state: Some(organization::State::Active as i16),
                    };
                    organizations::update(tx, &root, "", &active)?;
                }
                Some(_) => {}
            }
            let name = admin_name();
            let admin = match ServiceAccountRow::load(tx.conn, &name, Lock::Update)? {
                None => principals::insert_service_account(tx, admin_account())?,
                Some(row)
                    if row.state != service_account::State::Active as i16
                        || !row.roles().contains(Role::Admin) =>
                {
                    let mut roles: Vec<Role> = row.roles().iter().collect();
                    roles.push(Role::Admin);
                    let repaired = ServiceAccountChanges {
                        state: Some(service_account::State::Active as i16),
                        roles: Some(Roles::new(roles).to_stored()),
                        ..Default::default()
                    };
                    principals::update_service_account(tx, &name, "", &|_| Ok(()), &repaired)?
                }
                Some(row) => row,
            };
            mint_admin_key(tx, admin.uid, "recover-root")
        })
        .await
}

fn root_org() -> NewOrganization {
    NewOrganization {
        id: Some(ROOT_ORG.into()),
        display_name: "Root".into(),
        state: organization::State::Active,
    }
}

fn admin_account() -> NewServiceAccount {
    NewServiceAccount {
        name: admin_name(),
        display_name: "Platform admin".into(),
        description: "Created at first start.".into(),
        state: service_account::State::Active as i16,
        roles: Roles::new(vec![Role::Admin]),
    }
}

fn mint_admin_key(tx: &mut Tx<'_>, admin_uid: String, display_name: &str) -> Result<SecretKey> {
    let new = NewApiKey {
        scopes: Vec::new(),
        owner: admin_name(),
        display_name: display_name.into(),
        expire_time: None,
        role_cap: None,
    };
    Ok(api_keys::insert(tx, new, admin_uid)?.1)
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
    let new = NewApiKey {
        scopes: Vec::new(),
        owner: owner.clone(),
        display_name,
        expire_time: None,
        role_cap: None,
    };
    let ctx = WriteContext::system("admin create-key");
    Ok(store.create_api_key(&ctx, new, |_| Ok(())).await?.1)
}
