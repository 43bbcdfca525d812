//! `tollgate.v1.ServiceAccountService`.

use tollgate::tollgate::v1::{
    CreateServiceAccountRequest, DeleteServiceAccountRequest, GetServiceAccountRequest,
    ListServiceAccountsRequest, ListServiceAccountsResponse, ServiceAccount,
    UpdateServiceAccountRequest, service_account_service_server::ServiceAccountService,
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
        now_micros,
        validate::{self, MAX_DESCRIPTION},
    },
    store::{
        Store,
        principals::{PrincipalRow, ServiceAccountChanges, ServiceAccountRow},
    },
};

const FILTERS: &[(&str, FieldType)] = &[
    ("state", FieldType::Enum(&[("ACTIVE", 1), ("DISABLED", 2)])),
    ("display_name", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];
const MUTABLE: &[&str] = &["display_name", "description", "state", "roles"];

pub fn to_proto(r: &ServiceAccountRow) -> ServiceAccount {
    ServiceAccount {
        name: r.principal_name().to_string(),
        uid: r.uid.clone(),
        display_name: r.display_name.clone(),
        description: r.description.clone(),
        state: i32::from(r.state),
        roles: r.roles().names().map(str::to_owned).collect(),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: r.etag(),
    }
}

fn manage_guard(
    caller: &Principal,
    org: &str,
) -> impl Fn(&ServiceAccountRow) -> crate::domain::Result<()> + use<> {
    let caller = caller.clone();
    let org = org.to_owned();
    move |row: &ServiceAccountRow| {
        caller.check_may_manage(&org, &row.roles(), "service_account.roles")
    }
}

fn parse_name(field: &str, name: &str) -> Result<PrincipalName, Status> {
    Ok(
        PrincipalName::parse_kind(field, name, PrincipalKind::ServiceAccount)
            .map_err(Error::from)?,
    )
}

pub struct ServiceAccounts {
    store: Store,
}

impl ServiceAccounts {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl ServiceAccountService for ServiceAccounts {
    async fn create_service_account(
        &self,
        req: Request<CreateServiceAccountRequest>,
    ) -> Result<Response<ServiceAccount>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        let caller = caller.authorize(&parent.org)?;
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
        v.clone().into_result()?;
        let (Some(roles), Some(state)) = (roles, state) else {
            return Err(Error::InvalidArgument(v).into());
        };
        caller.check_may_manage(&parent.org, &roles, "service_account.roles")?;
        let now = now_micros();
        let row = ServiceAccountRow {
            org_id: parent.org,
            sa_id: id,
            uid: generate_id(),
            display_name: sa.display_name,
            description: sa.description,
            state,
            roles: roles.to_stored(),
            create_time: now,
            update_time: now,
            revision: 1,
        };
        let created = self.store.create_service_account(row).await?;
        Ok(Response::new(to_proto(&created)))
    }

    async fn get_service_account(
        &self,
        req: Request<GetServiceAccountRequest>,
    ) -> Result<Response<ServiceAccount>, Status> {
        let caller = caller(&req)?;
        let name = parse_name("name", &req.get_ref().name)?;
        caller.authorize(&name.org)?;
        let row = self.store.get_service_account(&name).await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn list_service_accounts(
        &self,
        req: Request<ListServiceAccountsRequest>,
    ) -> Result<Response<ListServiceAccountsResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let (filter, page) = list_params(
            "serviceAccounts",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            FILTERS,
        )?;
        self.store.get_organization(&parent.org).await?;
        let (rows, next_page_token) = self
            .store
            .list_service_accounts(parent.org, filter, page)
            .await?;
        Ok(Response::new(ListServiceAccountsResponse {
            service_accounts: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_service_account(
        &self,
        req: Request<UpdateServiceAccountRequest>,
    ) -> Result<Response<ServiceAccount>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let Some(sa) = req.service_account else {
            return Err(Error::invalid("service_account", "required").into());
        };
        let name = parse_name("service_account.name", &sa.name)?;
        let caller = caller.authorize(&name.org)?;
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
                        caller.check_may_manage(&name.org, &r, "service_account.roles")?;
                        changes.roles = Some(r.to_stored());
                    }
                    Err(e) => v.0.push(e),
                },
                _ => {}
            }
        }
        v.into_result()?;
        let guard = manage_guard(caller, &name.org);
        let row = self
            .store
            .update_service_account(&name, sa.etag, guard, changes)
            .await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn delete_service_account(
        &self,
        req: Request<DeleteServiceAccountRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let name = parse_name("name", &req.name)?;
        let caller = caller.authorize(&name.org)?;
        let guard = manage_guard(caller, &name.org);
        self.store
            .delete_service_account(&name, req.etag, guard)
            .await?;
        Ok(Response::new(()))
    }
}
