//! `tollgate.v1.OAuthClientService`.

use tollgate::tollgate::v1::{
    CreateOAuthClientRequest, DeleteOAuthClientRequest, GetOAuthClientRequest,
    ListOAuthClientsRequest, ListOAuthClientsResponse, OAuthClient, RotateOAuthClientSecretRequest,
    UpdateOAuthClientRequest, o_auth_client::State,
    o_auth_client_service_server::OAuthClientService,
};
use tonic::{Request, Response, Status};

use super::{caller, list_params, manage_guard};
use crate::{
    domain::{
        Error, FieldViolation, Violations, mask,
        names::{ClientName, OrgName, PrincipalKind, PrincipalName, generate_id, validate_user_id},
        oauth_client::{
            self as rules, ClientType, Combination, DEFAULT_ACCESS_TOKEN_TTL,
            DEFAULT_REFRESH_TOKEN_TTL, MAX_ACCESS_TOKEN_TTL, MAX_REFRESH_TOKEN_TTL,
            MIN_ACCESS_TOKEN_TTL, MIN_REFRESH_TOKEN_TTL,
        },
        scope::Scopes,
        validate::{self, MAX_DESCRIPTION},
    },
    store::{
        Store,
        oauth_clients::{FILTERS, NewOAuthClient, OAuthClientChanges},
    },
};

const MUTABLE: &[&str] = &[
    "display_name",
    "description",
    "state",
    "redirect_uris",
    "grant_types",
    "scopes",
    "audiences",
    "access_token_ttl",
    "refresh_token_ttl",
    "service_account",
    "signing_algorithm",
];

/// The field a bound service account's guard names.
const SERVICE_ACCOUNT: &str = "oauth_client.service_account";

fn parse_name(field: &str, name: &str) -> Result<ClientName, Status> {
    Ok(ClientName::parse(field, name).map_err(Error::from)?)
}

/// A settable state, or the violation naming `field`.
fn state(field: &str, state: i32) -> Result<i16, FieldViolation> {
    match State::try_from(state) {
        Ok(s @ (State::Active | State::Disabled)) => Ok(s as i16),
        _ => Err(FieldViolation::new(field, "must be ACTIVE or DISABLED")),
    }
}

/// The id of the service account `name` names, which must be in `org`;
/// `None` when `name` is empty.
fn service_account(org: &str, name: &str) -> Result<Option<String>, FieldViolation> {
    if name.is_empty() {
        return Ok(None);
    }
    let sa = PrincipalName::parse_kind(SERVICE_ACCOUNT, name, PrincipalKind::ServiceAccount)?;
    if sa.org != org {
        return Err(FieldViolation::new(
            SERVICE_ACCOUNT,
            format!("must be a service account of organizations/{org}"),
        ));
    }
    Ok(Some(sa.id))
}

fn access_ttl(c: &OAuthClient) -> Result<i64, FieldViolation> {
    rules::ttl(
        "oauth_client.access_token_ttl",
        c.access_token_ttl.as_ref(),
        DEFAULT_ACCESS_TOKEN_TTL,
        MIN_ACCESS_TOKEN_TTL,
        MAX_ACCESS_TOKEN_TTL,
    )
}

fn refresh_ttl(c: &OAuthClient) -> Result<i64, FieldViolation> {
    rules::ttl(
        "oauth_client.refresh_token_ttl",
        c.refresh_token_ttl.as_ref(),
        DEFAULT_REFRESH_TOKEN_TTL,
        MIN_REFRESH_TOKEN_TTL,
        MAX_REFRESH_TOKEN_TTL,
    )
}

/// The `OAuthClientService` implementation.
pub struct OAuthClients {
    store: Store,
}

impl OAuthClients {
    /// Serves OAuth clients from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl OAuthClientService for OAuthClients {
    async fn create_o_auth_client(
        &self,
        mut req: Request<CreateOAuthClientRequest>,
    ) -> Result<Response<OAuthClient>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        let me = caller.authorize(&parent.org)?;
        let c = req.oauth_client.unwrap_or_default();
        let mut v = Violations::default();
        let id = if req.oauth_client_id.is_empty() {
            generate_id()
        } else {
            v.check(validate_user_id("oauth_client_id", &req.oauth_client_id));
            req.oauth_client_id
        };
        v.check(validate::display_name(
            "oauth_client.display_name",
            &c.display_name,
        ));
        v.check(validate::bounded_text(
            "oauth_client.description",
            &c.description,
            MAX_DESCRIPTION,
        ));
        let client_type = v.take(ClientType::parse("oauth_client.client_type", c.client_type));
        let state = if c.state == State::Unspecified as i32 {
            Some(State::Active as i16)
        } else {
            v.take(state("oauth_client.state", c.state))
        };
        let redirect_uris =
            rules::redirect_uris(&mut v, "oauth_client.redirect_uris", &c.redirect_uris);
        let grant_types = rules::grant_types(&mut v, "oauth_client.grant_types", &c.grant_types);
        let scopes = v.take(rules::scopes("oauth_client.scopes", &c.scopes));
        let audiences = rules::audiences(&mut v, "oauth_client.audiences", &c.audiences);
        let access_token_ttl = v.take(access_ttl(&c));
        let refresh_token_ttl = v.take(refresh_ttl(&c));
        let signing_algorithm = v.take(rules::signing_algorithm(
            "oauth_client.signing_algorithm",
            &c.signing_algorithm,
        ));
        let sa = v.take(service_account(&parent.org, &c.service_account));
        if let Some(client_type) = client_type {
            rules::check_combination(
                &mut v,
                "oauth_client",
                &Combination {
                    client_type,
                    redirect_uris: redirect_uris.len(),
                    grant_types: &grant_types,
                    has_service_account: !c.service_account.is_empty(),
                },
            );
        }
        let (
            Some(client_type),
            Some(state),
            Some(scopes),
            Some(access_token_ttl),
            Some(refresh_token_ttl),
            Some(signing_algorithm),
            Some(service_account),
        ) = (
            client_type,
            state,
            scopes,
            access_token_ttl,
            refresh_token_ttl,
            signing_algorithm,
            sa,
        )
        else {
            return Err(Error::InvalidArgument(v).into());
        };
        v.into_result()?;
        me.check_may_grant_scopes(&scopes)?;
        let new = NewOAuthClient {
            name: ClientName {
                org: parent.org.clone(),
                client: id,
            },
            display_name: c.display_name,
            description: c.description,
            client_type,
            state,
            redirect_uris,
            grant_types,
            scopes,
            audiences,
            access_token_ttl,
            refresh_token_ttl,
            service_account,
            signing_algorithm,
        };
        let guard = manage_guard(me, &parent.org, SERVICE_ACCOUNT);
        let (row, secret) = self
            .store
            .create_oauth_client(&caller.write_context(), new, guard)
            .await?;
        let mut out = row.to_proto();
        if let Some(secret) = secret {
            out.secret = secret.expose().to_owned();
        }
        Ok(Response::new(out))
    }

    async fn get_o_auth_client(
        &self,
        mut req: Request<GetOAuthClientRequest>,
    ) -> Result<Response<OAuthClient>, Status> {
        let caller = caller(&mut req)?;
        let name = parse_name("name", &req.get_ref().name)?;
        caller.authorize(&name.org)?;
        let row = self.store.get_oauth_client(&name).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn list_o_auth_clients(
        &self,
        mut req: Request<ListOAuthClientsRequest>,
    ) -> Result<Response<ListOAuthClientsResponse>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let (filter, page) = list_params(
            "clients",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            FILTERS,
        )?;
        self.store.get_organization(&parent.org).await?;
        let (rows, next_page_token) = self
            .store
            .list_oauth_clients(parent.org, filter, page)
            .await?;
        Ok(Response::new(ListOAuthClientsResponse {
            oauth_clients: rows.iter().map(|r| r.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn update_o_auth_client(
        &self,
        mut req: Request<UpdateOAuthClientRequest>,
    ) -> Result<Response<OAuthClient>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let Some(c) = req.oauth_client else {
            return Err(Error::invalid("oauth_client", "required").into());
        };
        let name = parse_name("oauth_client.name", &c.name)?;
        let me = caller.authorize(&name.org)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let fields = mask::resolve(&paths, MUTABLE, |f| match f {
            "display_name" => !c.display_name.is_empty(),
            "description" => !c.description.is_empty(),
            "state" => c.state != 0,
            "redirect_uris" => !c.redirect_uris.is_empty(),
            "grant_types" => !c.grant_types.is_empty(),
            "scopes" => !c.scopes.is_empty(),
            "audiences" => !c.audiences.is_empty(),
            "access_token_ttl" => c.access_token_ttl.is_some(),
            "refresh_token_ttl" => c.refresh_token_ttl.is_some(),
            "service_account" => !c.service_account.is_empty(),
            "signing_algorithm" => !c.signing_algorithm.is_empty(),
            _ => false,
        })?;
        let mut v = Violations::default();
        let mut ch = OAuthClientChanges::default();
        for f in fields {
            match f {
                "display_name" => {
                    v.check(validate::display_name(
                        "oauth_client.display_name",
                        &c.display_name,
                    ));
                    ch.display_name = Some(c.display_name.clone());
                }
                "description" => {
                    v.check(validate::bounded_text(
                        "oauth_client.description",
                        &c.description,
                        MAX_DESCRIPTION,
                    ));
                    ch.description = Some(c.description.clone());
                }
                "state" => ch.state = v.take(state("oauth_client.state", c.state)),
                "redirect_uris" => {
                    let uris = rules::redirect_uris(
                        &mut v,
                        "oauth_client.redirect_uris",
                        &c.redirect_uris,
                    );
                    ch.redirect_uris = Some(uris.join(" "));
                }
                "grant_types" => {
                    let grants =
                        rules::grant_types(&mut v, "oauth_client.grant_types", &c.grant_types);
                    ch.grant_types = Some(grants.join(" "));
                }
                "scopes" => {
                    let scopes = v.take(rules::scopes("oauth_client.scopes", &c.scopes));
                    if let Some(scopes) = &scopes {
                        me.check_may_grant_scopes(scopes)?;
                    }
                    ch.scopes = scopes.map(|s| Scopes::join(&s));
                }
                "audiences" => {
                    let a = rules::audiences(&mut v, "oauth_client.audiences", &c.audiences);
                    ch.audiences = Some(a.join(" "));
                }
                "access_token_ttl" => ch.access_token_ttl = v.take(access_ttl(&c)),
                "refresh_token_ttl" => ch.refresh_token_ttl = v.take(refresh_ttl(&c)),
                "service_account" => {
                    ch.service_account = v.take(service_account(&name.org, &c.service_account));
                }
                "signing_algorithm" => {
                    ch.signing_algorithm = v
                        .take(rules::signing_algorithm(
                            "oauth_client.signing_algorithm",
                            &c.signing_algorithm,
                        ))
                        .map(str::to_owned);
                }
                _ => {}
            }
        }
        v.into_result()?;
        let guard = manage_guard(me, &name.org, SERVICE_ACCOUNT);
        let row = self
            .store
            .update_oauth_client(&caller.write_context(), name, c.etag, guard, ch)
            .await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn delete_o_auth_client(
        &self,
        mut req: Request<DeleteOAuthClientRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = parse_name("name", &req.name)?;
        let me = caller.authorize(&name.org)?;
        let guard = manage_guard(me, &name.org, SERVICE_ACCOUNT);
        self.store
            .delete_oauth_client(&caller.write_context(), name, req.etag, guard)
            .await?;
        Ok(Response::new(()))
    }

    async fn rotate_o_auth_client_secret(
        &self,
        mut req: Request<RotateOAuthClientSecretRequest>,
    ) -> Result<Response<OAuthClient>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = parse_name("name", &req.name)?;
        let me = caller.authorize(&name.org)?;
        let grace =
            rules::secret_grace("grace_period", req.grace_period.as_ref()).map_err(Error::from)?;
        let guard = manage_guard(me, &name.org, SERVICE_ACCOUNT);
        let (row, secret) = self
            .store
            .rotate_oauth_client_secret(&caller.write_context(), name, req.etag, grace, guard)
            .await?;
        let mut out = row.to_proto();
        out.secret = secret.expose().to_owned();
        Ok(Response::new(out))
    }
}
