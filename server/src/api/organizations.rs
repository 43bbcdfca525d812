//! `tollgate.v1.OrganizationService`.

use tollgate::tollgate::v1::{
    CreateOrganizationRequest, DeleteOrganizationRequest, GetOrganizationRequest,
    ListOrganizationsRequest, ListOrganizationsResponse, Organization, UpdateOrganizationRequest,
    organization::State, organization_service_server::OrganizationService,
};
use tonic::{Request, Response, Status};

use super::{caller, list_params, timestamp};
use crate::{
    domain::{
        Error, Violations,
        filter::FieldType,
        mask,
        names::{OrgName, generate_id, validate_user_id},
        now_micros, validate,
    },
    store::{
        Store,
        organizations::{OrganizationChanges, OrganizationRow},
    },
};

const FILTERS: &[(&str, FieldType)] = &[
    ("state", FieldType::Enum(&[("ACTIVE", 1), ("SUSPENDED", 2)])),
    ("display_name", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];
const MUTABLE: &[&str] = &["display_name", "state"];

pub fn to_proto(r: &OrganizationRow) -> Organization {
    Organization {
        name: r.name(),
        uid: r.uid.clone(),
        display_name: r.display_name.clone(),
        state: i32::from(r.state),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: r.etag(),
    }
}

/// A settable state, or the violation naming `field`.
fn settable_state(field: &str, state: i32) -> Result<i16, Error> {
    match State::try_from(state) {
        Ok(State::Active) => Ok(1),
        Ok(State::Suspended) => Ok(2),
        _ => Err(Error::invalid(field, "must be ACTIVE or SUSPENDED")),
    }
}

pub struct Organizations {
    store: Store,
}

impl Organizations {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl OrganizationService for Organizations {
    async fn create_organization(
        &self,
        req: Request<CreateOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let mut v = Violations::default();
        let org = req.organization.unwrap_or_default();
        let id = if req.organization_id.is_empty() {
            generate_id()
        } else {
            v.check(validate_user_id("organization_id", &req.organization_id));
            req.organization_id
        };
        v.check(validate::display_name(
            "organization.display_name",
            &org.display_name,
        ));
        let state = if org.state == 0 {
            Ok(1)
        } else {
            settable_state("organization.state", org.state)
        };
        if let Err(Error::InvalidArgument(e)) = &state {
            v.0.extend(e.0.iter().cloned());
        }
        v.into_result()?;
        caller.authorize(&id)?;
        let now = now_micros();
        let row = OrganizationRow {
            org_id: id,
            uid: generate_id(),
            display_name: org.display_name,
            state: state.unwrap_or(1),
            create_time: now,
            update_time: now,
            revision: 1,
        };
        let created = self.store.create_organization(row).await?;
        Ok(Response::new(to_proto(&created)))
    }

    async fn get_organization(
        &self,
        req: Request<GetOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        let caller = caller(&req)?;
        let name = OrgName::parse("name", &req.get_ref().name).map_err(Error::from)?;
        caller.authorize(&name.org)?;
        let row = self.store.get_organization(&name.org).await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn list_organizations(
        &self,
        req: Request<ListOrganizationsRequest>,
    ) -> Result<Response<ListOrganizationsResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let (filter, page) = list_params(
            "organizations",
            "",
            &req.filter,
            req.page_size,
            &req.page_token,
            FILTERS,
        )?;
        // Everyone but a platform admin sees only their own organization.
        let only = caller.authorize_platform_or_own()?.map(str::to_owned);
        let (rows, next_page_token) = self.store.list_organizations(only, filter, page).await?;
        Ok(Response::new(ListOrganizationsResponse {
            organizations: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_organization(
        &self,
        req: Request<UpdateOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let Some(org) = req.organization else {
            return Err(Error::invalid("organization", "required").into());
        };
        let name = OrgName::parse("organization.name", &org.name).map_err(Error::from)?;
        caller.authorize(&name.org)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let fields = mask::resolve(&paths, MUTABLE, |f| match f {
            "display_name" => !org.display_name.is_empty(),
            "state" => org.state != 0,
            _ => false,
        })?;
        let mut v = Violations::default();
        let mut changes = OrganizationChanges::default();
        for f in fields {
            match f {
                "display_name" => {
                    v.check(validate::display_name(
                        "organization.display_name",
                        &org.display_name,
                    ));
                    changes.display_name = Some(org.display_name.clone());
                }
                "state" => match settable_state("organization.state", org.state) {
                    Ok(s) => changes.state = Some(s),
                    Err(Error::InvalidArgument(e)) => v.0.extend(e.0),
                    Err(e) => return Err(e.into()),
                },
                _ => {}
            }
        }
        v.into_result()?;
        if name.org == crate::domain::authz::ROOT_ORG && changes.state == Some(2) {
            return Err(Error::FailedPrecondition {
                reason: "ROOT_ORGANIZATION",
                message: "organizations/root cannot be suspended".into(),
            }
            .into());
        }
        let row = self
            .store
            .update_organization(&name.org, org.etag, changes)
            .await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn delete_organization(
        &self,
        req: Request<DeleteOrganizationRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let name = OrgName::parse("name", &req.name).map_err(Error::from)?;
        caller.authorize(&name.org)?;
        if name.org == crate::domain::authz::ROOT_ORG {
            return Err(Error::FailedPrecondition {
                reason: "ROOT_ORGANIZATION",
                message: "organizations/root cannot be deleted".into(),
            }
            .into());
        }
        self.store
            .delete_organization(&name.org, req.etag, req.force)
            .await?;
        Ok(Response::new(()))
    }
}
