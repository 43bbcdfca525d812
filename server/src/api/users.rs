//! `tollgate.v1.UserService`.

use tollgate::tollgate::v1::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse,
    SetPasswordRequest, UpdateUserRequest, User, user_service_server::UserService,
};
use tonic::{Request, Response, Status};

use super::{caller, initial_state, list_params, principal_state, timestamp};
use crate::{
    domain::{
        Error, Violations,
        authz::{Principal, Roles},
        filter::FieldType,
        mask,
        names::{OrgName, PrincipalKind, PrincipalName, generate_id, validate_user_id},
        now_micros, password, validate,
    },
    store::{
        Store,
        principals::{PrincipalRow, UserChanges, UserRow},
    },
};

const FILTERS: &[(&str, FieldType)] = &[
    ("state", FieldType::Enum(&[("ACTIVE", 1), ("DISABLED", 2)])),
    ("display_name", FieldType::Text),
    ("email", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];
const MUTABLE: &[&str] = &["display_name", "email", "state", "roles"];

pub fn to_proto(r: &UserRow) -> User {
    User {
        name: r.principal_name().to_string(),
        uid: r.uid.clone(),
        display_name: r.display_name.clone(),
        email: r.email.clone(),
        state: i32::from(r.state),
        roles: r.roles().names().map(str::to_owned).collect(),
        has_password: r.password_hash.is_some(),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: r.etag(),
    }
}

/// A guard for writes: the caller may not manage a user holding roles above
/// its own.
fn manage_guard(
    caller: &Principal,
    org: &str,
) -> impl Fn(&UserRow) -> crate::domain::Result<()> + use<> {
    let caller = caller.clone();
    let org = org.to_owned();
    move |row: &UserRow| caller.check_may_manage(&org, &row.roles(), "user.roles")
}

pub struct Users {
    store: Store,
    hasher: password::Hasher,
}

impl Users {
    /// The service on `store`, hashing passwords through `hasher`.
    pub fn new(store: Store, hasher: password::Hasher) -> Self {
        Self { store, hasher }
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(&self, req: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize("users.create", &parent.org)?;
        let user = req.user.unwrap_or_default();
        let mut v = Violations::default();
        let id = if req.user_id.is_empty() {
            generate_id()
        } else {
            v.check(validate_user_id("user_id", &req.user_id));
            req.user_id
        };
        v.check(validate::display_name(
            "user.display_name",
            &user.display_name,
        ));
        let email = v.take(validate::email("user.email", &user.email));
        let roles = v.take(Roles::parse_request("user.roles", &user.roles));
        let state = v.take(initial_state("user.state", user.state));
        v.clone().into_result()?;
        let (Some(email), Some(roles), Some(state)) = (email, roles, state) else {
            return Err(Error::InvalidArgument(v).into());
        };
        caller.check_may_manage(&parent.org, &roles, "user.roles")?;
        let now = now_micros();
        let row = UserRow {
            org_id: parent.org,
            user_id: id,
            uid: generate_id(),
            display_name: user.display_name,
            email,
            state,
            roles: roles.to_stored(),
            password_hash: None,
            create_time: now,
            update_time: now,
            revision: 1,
        };
        let created = self.store.create_user(row).await?;
        Ok(Response::new(to_proto(&created)))
    }

    async fn get_user(&self, req: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&req)?;
        let name = PrincipalName::parse_kind("name", &req.get_ref().name, PrincipalKind::User)
            .map_err(Error::from)?;
        caller.authorize("users.get", &name.org)?;
        let row = self.store.get_user(&name).await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn list_users(
        &self,
        req: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize("users.list", &parent.org)?;
        let (filter, page) = list_params(
            "users",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            FILTERS,
        )?;
        // An unknown organization is NOT_FOUND, not an empty list.
        self.store.get_organization(&parent.org).await?;
        let (rows, next_page_token) = self.store.list_users(parent.org, filter, page).await?;
        Ok(Response::new(ListUsersResponse {
            users: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_user(&self, req: Request<UpdateUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let Some(user) = req.user else {
            return Err(Error::invalid("user", "required").into());
        };
        let name = PrincipalName::parse_kind("user.name", &user.name, PrincipalKind::User)
            .map_err(Error::from)?;
        caller.authorize("users.update", &name.org)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let fields = mask::resolve(&paths, MUTABLE, |f| match f {
            "display_name" => !user.display_name.is_empty(),
            "email" => !user.email.is_empty(),
            "state" => user.state != 0,
            "roles" => !user.roles.is_empty(),
            _ => false,
        })?;
        let mut v = Violations::default();
        let mut changes = UserChanges::default();
        for f in fields {
            match f {
                "display_name" => {
                    v.check(validate::display_name(
                        "user.display_name",
                        &user.display_name,
                    ));
                    changes.display_name = Some(user.display_name.clone());
                }
                "email" => match validate::email("user.email", &user.email) {
                    Ok(e) => changes.email = Some(e),
                    Err(e) => v.0.push(e),
                },
                "state" => match principal_state("user.state", user.state) {
                    Ok(s) => changes.state = Some(s),
                    Err(e) => v.0.push(e),
                },
                "roles" => match Roles::parse_request("user.roles", &user.roles) {
                    Ok(r) => {
                        caller.check_may_manage(&name.org, &r, "user.roles")?;
                        changes.roles = Some(r.to_stored());
                    }
                    Err(e) => v.0.push(e),
                },
                _ => {}
            }
        }
        v.into_result()?;
        let guard = manage_guard(&caller, &name.org);
        let row = self
            .store
            .update_user(&name, user.etag, guard, changes, "user.updated")
            .await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn delete_user(&self, req: Request<DeleteUserRequest>) -> Result<Response<()>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let name = PrincipalName::parse_kind("name", &req.name, PrincipalKind::User)
            .map_err(Error::from)?;
        caller.authorize("users.delete", &name.org)?;
        let guard = manage_guard(&caller, &name.org);
        self.store.delete_user(&name, req.etag, guard).await?;
        Ok(Response::new(()))
    }

    async fn set_password(
        &self,
        req: Request<SetPasswordRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let name = PrincipalName::parse_kind("name", &req.name, PrincipalKind::User)
            .map_err(Error::from)?;
        caller.authorize("users.setPassword", &name.org)?;
        password::validate("password", &req.password).map_err(Error::from)?;
        // argon2id costs 19 MiB and tens of milliseconds: refuse a missing
        // or unmanageable target before paying for it. The guard in the
        // write below still decides, against the row it updates.
        let target = self.store.get_user(&name).await?;
        caller.check_may_manage(&name.org, &target.roles(), "user.roles")?;
        let hash = self.hasher.hash(req.password).await?;
        let changes = UserChanges {
            password_hash: Some(Some(hash)),
            ..Default::default()
        };
        let guard = manage_guard(&caller, &name.org);
        let row = self
            .store
            .update_user(&name, String::new(), guard, changes, "user.passwordSet")
            .await?;
        Ok(Response::new(to_proto(&row)))
    }
}
