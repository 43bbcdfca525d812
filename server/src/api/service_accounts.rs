//! `tollgate.v1.ServiceAccountService`.

use tollgate::tollgate::v1::{
    CreateServiceAccountRequest, DeleteServiceAccountRequest, GetServiceAccountRequest,
    ListServiceAccountsRequest, ListServiceAccountsResponse, ServiceAccount,
    UpdateServiceAccountRequest, service_account_service_server::ServiceAccountService,
};
use tonic::{Request, Response, Status};

use super::{caller, initial_state, list_params, manage_guard, principal_state};
use crate::{
    domain::{
        Error, Violations,
        authz::Roles,
        mask,
        names::{OrgName, PrincipalKind, PrincipalName, generate_id, validate_user_id},
        validate::{self, MAX_DESCRIPTION},
    },
    store::{
        Store,
        principals::{NewServiceAccount, SERVICE_ACCOUNT_FILTERS, ServiceAccountChanges},
    },
};

const MUTABLE: &[&str] = &["display_name", "description", "state", "roles"];

fn parse_name(field: &str, name: &str) -> Result<PrincipalName, Status> {
    Ok(
        PrincipalName::parse_kind(field, name, PrincipalKind::ServiceAccount)
            .map_err(Error::from)?,
    )
}

/// The `ServiceAccountService` implementation.
pub struct ServiceAccounts {
    store: Store,
}

impl ServiceAccounts {
    /// Serves service accounts from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl ServiceAccountService for ServiceAccounts {
    async fn create_service_account(
        &self,
        mut req: Request<CreateServiceAccountRequest>,
    ) -> Result<Response<ServiceAccount>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        let me = caller.authorize(&parent.org)?;
        let sa = req.service_account.unwrap_or_default();
        let mut v = Violations::default();
        let id = if req.service_account_id.is_empty() {
            generate_id()
        } else {
            v.check(validate_user_id(
                "service_account_id",
                &req.service_account_id,
            ));
            req.service_account_id
        };
        v.check(validate::display_name(
            "service_account.display_name",
            &sa.display_name,
        ));
        v.check(validate::bounded_text(
            "service_account.description",
            &sa.description,
            MAX_DESCRIPTION,
        ));
        let roles = v.take(Roles::parse_request("service_account.roles", &sa.roles));
        let state = v.take(initial_state("service_account.state", sa.state));
        let (Some(roles), Some(state)) = (roles, state) else {
            return Err(Error::InvalidArgument(v).into());
        };
        v.into_result()?;
        me.check_may_manage(&parent.org, &roles, "service_account.roles")?;
        let new = NewServiceAccount {
            name: PrincipalName {
                org: parent.org,
                kind: PrincipalKind::ServiceAccount,
                id,
            },
            display_name: sa.display_name,
            description: sa.description,
            state,
            roles,
        };
        let created = self
            .store
            .create_service_account(&caller.write_context(), new)
            .await?;
        Ok(Response::new(created.to_proto()))
    }

    async fn get_service_account(
        &self,
        mut req: Request<GetServiceAccountRequest>,
    ) -> Result<Response<ServiceAccount>, Status> {
        let caller = caller(&mut req)?;
        let name = parse_name("name", &req.get_ref().name)?;
        caller.authorize(&name.org)?;
        let row = self.store.get_service_account(&name).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn list_service_accounts(
        &self,
        mut req: Request<ListServiceAccountsRequest>,
    ) -> Result<Response<ListServiceAccountsResponse>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let (filter, page) = list_params(
            "serviceAccounts",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            SERVICE_ACCOUNT_FILTERS,
        )?;
        self.store.get_organization(&parent.org).await?;
        let (rows, next_page_token) = self
            .store
            .list_service_accounts(parent.org, filter, page)
            .await?;
        Ok(Response::new(ListServiceAccountsResponse {
            service_accounts: rows.iter().map(|r| r.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn update_service_account(
        &self,
        mut req: Request<UpdateServiceAccountRequest>,
    ) -> Result<Response<ServiceAccount>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let Some(sa) = req.service_account else {
            return Err(Error::invalid("service_account", "required").into());
        };
        let name = parse_name("service_account.name", &sa.name)?;
        let me = caller.authorize(&name.org)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let fields = mask::resolve(&paths, MUTABLE, |f| match f {
            "display_name" => !sa.display_name.is_empty(),
            "description" => !sa.description.is_empty(),
            "state" => sa.state != 0,
            "roles" => !sa.roles.is_empty(),
            _ => false,
        })?;
        let mut v = Violations::default();
        let mut changes = ServiceAccountChanges::default();
        for f in fields {
            match f {
                "display_name" => {
                    v.check(validate::display_name(
                        "service_account.display_name",
                        &sa.display_name,
                    ));
                    changes.display_name = Some(sa.display_name.clone());
                }
                "description" => {
                    v.check(validate::bounded_text(
                        "service_account.description",
                        &sa.description,
                        MAX_DESCRIPTION,
                    ));
                    changes.description = Some(sa.description.clone());
                }
                "state" => match principal_state("service_account.state", sa.state) {
                    Ok(s) => changes.state = Some(s),
                    Err(e) => v.0.push(e),
                },
                "roles" => match Roles::parse_request("service_account.roles", &sa.roles) {
                    Ok(r) => {
                        me.check_may_manage(&name.org, &r, "service_account.roles")?;
                        changes.roles = Some(r.to_stored());
                    }
                    Err(e) => v.0.push(e),
                },
                _ => {}
            }
        }
        v.into_result()?;
        let guard = manage_guard(me, &name.org, "service_account.roles");
        let row = self
            .store
            .update_service_account(&caller.write_context(), name, sa.etag, guard, changes)
            .await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn delete_service_account(
        &self,
        mut req: Request<DeleteServiceAccountRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = parse_name("name", &req.name)?;
        let me = caller.authorize(&name.org)?;
        let guard = manage_guard(me, &name.org, "service_account.roles");
        self.store
            .delete_service_account(&caller.write_context(), name, req.etag, guard)
            .await?;
        Ok(Response::new(()))
    }
}
