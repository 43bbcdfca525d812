//! `tollgate.v1.UserService`.

use tollgate::tollgate::v1::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse,
    SetPasswordRequest, UpdateUserRequest, User, user_service_server::UserService,
};
use tonic::{Request, Response, Status};

use super::{caller, initial_state, list_params, manage_guard, principal_state};
use crate::{
    domain::{
        Error, Violations,
        authz::Roles,
        mask,
        names::{OrgName, PrincipalKind, PrincipalName, generate_id, validate_user_id},
        password, validate,
    },
    events::EventKind,
    store::{
        Store,
        principals::{NewUser, PrincipalRow, USER_FILTERS, UserChanges},
    },
};

const MUTABLE: &[&str] = &["display_name", "email", "state", "roles"];

/// The `UserService` implementation.
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
    async fn create_user(
        &self,
        mut req: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        let me = caller.authorize(&parent.org)?;
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
        let (Some(email), Some(roles), Some(state)) = (email, roles, state) else {
            return Err(Error::InvalidArgument(v).into());
        };
        v.into_result()?;
        me.check_may_manage(&parent.org, &roles, "user.roles")?;
        let new = NewUser {
            name: PrincipalName {
                org: parent.org,
                kind: PrincipalKind::User,
                id,
            },
            display_name: user.display_name,
            email,
            state,
            roles,
        };
        let created = self.store.create_user(&caller.write_context(), new).await?;
        Ok(Response::new(created.to_proto()))
    }

    async fn get_user(&self, mut req: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let caller = caller(&mut req)?;
        let name = PrincipalName::parse_kind("name", &req.get_ref().name, PrincipalKind::User)
            .map_err(Error::from)?;
        caller.authorize(&name.org)?;
        let row = self.store.get_user(&name).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn list_users(
        &self,
        mut req: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let (filter, page) = list_params(
            "users",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            USER_FILTERS,
        )?;
        // An unknown organization is NOT_FOUND, not an empty list.
        self.store.get_organization(&parent.org).await?;
        let (rows, next_page_token) = self.store.list_users(parent.org, filter, page).await?;
        Ok(Response::new(ListUsersResponse {
            users: rows.iter().map(|r| r.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        mut req: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let Some(user) = req.user else {
            return Err(Error::invalid("user", "required").into());
        };
        let name = PrincipalName::parse_kind("user.name", &user.name, PrincipalKind::User)
            .map_err(Error::from)?;
        let me = caller.authorize(&name.org)?;
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
                        me.check_may_manage(&name.org, &r, "user.roles")?;
                        changes.roles = Some(r.to_stored());
                    }
                    Err(e) => v.0.push(e),
                },
                _ => {}
            }
        }
        v.into_result()?;
        let guard = manage_guard(me, &name.org, "user.roles");
        let row = self
            .store
            .update_user(
                &caller.write_context(),
                name,
                user.etag,
                guard,
                changes,
                EventKind::UserUpdated,
            )
            .await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn delete_user(
        &self,
        mut req: Request<DeleteUserRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = PrincipalName::parse_kind("name", &req.name, PrincipalKind::User)
            .map_err(Error::from)?;
        let me = caller.authorize(&name.org)?;
        let guard = manage_guard(me, &name.org, "user.roles");
        self.store
            .delete_user(&caller.write_context(), name, req.etag, guard)
            .await?;
        Ok(Response::new(()))
    }

    async fn set_password(
        &self,
        mut req: Request<SetPasswordRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = PrincipalName::parse_kind("name", &req.name, PrincipalKind::User)
            .map_err(Error::from)?;
        let me = caller.authorize(&name.org)?;
        password::validate("password", &req.password).map_err(Error::from)?;
        // argon2id costs 19 MiB and tens of milliseconds: refuse a missing
        // or unmanageable target before paying for it. The guard in the
        // write below still decides, against the row it updates.
        let target = self.store.get_user(&name).await?;
        me.check_may_manage(&name.org, &target.roles(), "user.roles")?;
        let hash = self.hasher.hash(req.password).await?;
        let changes = UserChanges {
            password_hash: Some(Some(hash)),
            ..Default::default()
        };
        let guard = manage_guard(me, &name.org, "user.roles");
        let row = self
            .store
            .update_user(
                &caller.write_context(),
                name,
                String::new(),
                guard,
                changes,
                EventKind::UserPasswordSet,
            )
            .await?;
        Ok(Response::new(row.to_proto()))
    }
}
