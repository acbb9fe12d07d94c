//! Many accounts and regions from one operator (issue 17): one EC2 client per (credentials,
//! region), made when first needed, and one client-side rate limiter per (account, region),
//! because AWS's request-token buckets are per account and region.
//!
//! Credentials: the operator's own (the standard chain: env, IRSA, EKS Pod Identity) for the
//! `home` client, and for a granted role the SDK's own `AssumeRoleProvider` (aws-config), one
//! per role, behind the SDK's identity cache (shared by every client made from the operator's
//! configuration, partitioned per provider): an assumed session is cached per role, shared by
//! the role's clients in every region, and refreshed before it expires. No signing or refresh
//! of ours.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::Ec2;
use super::sdk::{Ec2Options, Limiter, SdkEc2};
use crate::api::grant::AccountAccess;
use crate::telemetry::Metrics;

/// Default role session name (CloudTrail shows it).
pub const DEFAULT_SESSION_NAME: &str = "bedrock-privatelink-operator";

/// Where an object's endpoints live: whose credentials (None: the operator's own) and which
/// region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub role: Option<AccountAccess>,
    pub region: String,
}

impl Target {
    /// The account the target's credentials act in (None: the operator's own, if unknown).
    pub fn account(&self, home_account: Option<&str>) -> Option<String> {
        match &self.role {
            Some(r) => Some(r.account_id().to_string()),
            None => home_account.map(str::to_string),
        }
    }
}

/// The limiter key: one bucket set per (account, region). The operator's own account, if it
/// is not known, is "self".
pub fn limiter_key(account: Option<&str>, region: &str) -> (String, String) {
    (account.unwrap_or("self").to_string(), region.to_string())
}

/// Makes the client of a target (the SDK's, or a test's).
pub trait Connect: Send + Sync {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        limiter: Option<Arc<Limiter>>,
    ) -> BoxFuture<'a, Ec2>;
}

/// See the module doc.
pub struct Ec2Pool {
    home: Ec2,
    /// None: every target gets the home client's API under its own region and account (unit
    /// tests with the fake, which is one world).
    connect: Option<Box<dyn Connect>>,
    rate_limit: bool,
    clients: tokio::sync::Mutex<HashMap<Target, Ec2>>,
    limiters: std::sync::Mutex<HashMap<(String, String), Arc<Limiter>>>,
}

impl From<Ec2> for Ec2Pool {
    fn from(home: Ec2) -> Self {
        Ec2Pool::fixed(home)
    }
}

impl Ec2Pool {
    /// A pool whose every client is `home`'s API (unit tests).
    pub fn fixed(home: Ec2) -> Self {
        Self {
            home,
            connect: None,
            rate_limit: false,
            clients: Default::default(),
            limiters: Default::default(),
        }
    }

    /// A pool that makes its clients with `connect`; `home`'s limiter (if any) is the one of
    /// its (account, region).
    pub fn new(
        home: Ec2,
        home_limiter: Option<Arc<Limiter>>,
        connect: Box<dyn Connect>,
        rate_limit: bool,
    ) -> Self {
        let mut limiters = HashMap::new();
        if let Some(l) = home_limiter {
            limiters.insert(limiter_key(home.account.as_deref(), &home.region), l);
        }
        Self {
            home,
            connect: Some(connect),
            rate_limit,
            clients: Default::default(),
            limiters: std::sync::Mutex::new(limiters),
        }
    }

    /// The real pool: the operator's own configuration, its account (GetCallerIdentity, when STS
    /// may be asked), and the SDK's AssumeRoleProvider for granted roles.
    pub async fn connect(opts: Ec2Options, metrics: Arc<Metrics>) -> Self {
        let shared = opts.load_shared().await;
        let sts = opts.sts_config(&shared);
        let region = shared
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        let sts_allowed = sts_allowed(&opts);
        let account = if sts_allowed {
            caller_account(&sts).await
        } else {
            None
        };
        let home_limiter = opts.rate_limit.then(|| Arc::new(Limiter::aws_defaults()));
        let sdk = SdkEc2::build(
            &shared,
            &region,
            None,
            home_limiter.clone(),
            &opts,
            metrics.clone(),
        );
        let home = Ec2 {
            region,
            account,
            api: Arc::new(sdk),
        };
        let rate_limit = opts.rate_limit;
        let connect = SdkConnect {
            shared,
            sts,
            sts_allowed,
            opts,
            metrics,
            providers: Default::default(),
        };
        Self::new(home, home_limiter, Box::new(connect), rate_limit)
    }

    /// The operator's own client (its credentials, its region).
    pub fn home(&self) -> &Ec2 {
        &self.home
    }

    /// The home target.
    pub fn home_target(&self) -> Target {
        Target {
            role: None,
            region: self.home.region.clone(),
        }
    }

    /// The client of `target`, made on first use.
    pub async fn client(&self, target: &Target) -> Ec2 {
        if target.role.is_none() && target.region == self.home.region {
            return self.home.clone();
        }
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(target) {
            return c.clone();
        }
        let account = target.account(self.home.account.as_deref());
        let client = match &self.connect {
            None => Ec2 {
                region: target.region.clone(),
                account,
                api: self.home.api.clone(),
            },
            Some(connect) => {
                let limiter = self
                    .rate_limit
                    .then(|| self.limiter(account.as_deref(), &target.region));
                let mut c = connect.connect(target, limiter).await;
                // The operator's own account in another region is known here, not there.
                c.account = account;
                c
            }
        };
        tracing::info!(region = %target.region, account = client.account.as_deref().unwrap_or("self"), role = target.role.as_ref().map(|r| r.role_arn.as_str()).unwrap_or("(own credentials)"), "new EC2 client");
        clients.insert(target.clone(), client.clone());
        client
    }

    /// The limiter of (account, region), shared by every client acting there.
    pub fn limiter(&self, account: Option<&str>, region: &str) -> Arc<Limiter> {
        self.limiters
            .lock()
            .expect("limiters lock")
            .entry(limiter_key(account, region))
            .or_insert_with(|| Arc::new(Limiter::aws_defaults()))
            .clone()
    }

    /// Clients made so far (the home client not counted).
    pub async fn clients_made(&self) -> usize {
        self.clients.lock().await.len()
    }
}

/// Whether the operator may call STS: never to AWS itself while EC2 goes to an emulator (an
/// EC2 endpoint override without an STS one), so that a test rig never reaches out.
fn sts_allowed(opts: &Ec2Options) -> bool {
    let env = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    let ec2_overridden =
        opts.endpoint_url.is_some() || env("AWS_ENDPOINT_URL_EC2") || env("AWS_ENDPOINT_URL");
    let sts_overridden =
        opts.sts_endpoint_url.is_some() || env("AWS_ENDPOINT_URL_STS") || env("AWS_ENDPOINT_URL");
    sts_overridden || !ec2_overridden
}

/// The operator's own account (sts:GetCallerIdentity needs no permission). None if STS does
/// not answer within a few seconds: the status then shows no account for its own objects.
async fn caller_account(sts: &aws_config::SdkConfig) -> Option<String> {
    let client = aws_sdk_sts::Client::new(sts);
    match tokio::time::timeout(Duration::from_secs(10), client.get_caller_identity().send()).await {
        Ok(Ok(out)) => out.account().map(str::to_string),
        Ok(Err(e)) => {
            tracing::warn!(error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "GetCallerIdentity failed: the operator's own account is unknown");
            None
        }
        Err(_) => {
            tracing::warn!("GetCallerIdentity timed out: the operator's own account is unknown");
            None
        }
    }
}

/// The SDK's clients: one AssumeRoleProvider per role (so the identity cache keeps one session
/// per role), one EC2 client per (role, region).
struct SdkConnect {
    shared: aws_config::SdkConfig,
    sts: aws_config::SdkConfig,
    sts_allowed: bool,
    opts: Ec2Options,
    metrics: Arc<Metrics>,
    providers: tokio::sync::Mutex<
        HashMap<AccountAccess, aws_credential_types::provider::SharedCredentialsProvider>,
    >,
}

impl SdkConnect {
    async fn provider(
        &self,
        role: &AccountAccess,
    ) -> aws_credential_types::provider::SharedCredentialsProvider {
        let mut providers = self.providers.lock().await;
        if let Some(p) = providers.get(role) {
            return p.clone();
        }
        let provider = if self.sts_allowed {
            let mut b = aws_config::sts::AssumeRoleProvider::builder(role.role_arn.clone())
                .session_name(
                    role.session_name
                        .clone()
                        .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_string()),
                )
                .configure(&self.sts);
            if let Some(id) = &role.external_id {
                b = b.external_id(id.clone());
            }
            aws_credential_types::provider::SharedCredentialsProvider::new(b.build().await)
        } else {
            aws_credential_types::provider::SharedCredentialsProvider::new(NoSts)
        };
        providers.insert(role.clone(), provider.clone());
        provider
    }
}

impl Connect for SdkConnect {
    fn connect<'a>(
        &'a self,
        target: &'a Target,
        limiter: Option<Arc<Limiter>>,
    ) -> BoxFuture<'a, Ec2> {
        Box::pin(async move {
            let credentials = match &target.role {
                Some(r) => Some(self.provider(r).await),
                None => None,
            };
            let sdk = SdkEc2::build(
                &self.shared,
                &target.region,
                credentials,
                limiter,
                &self.opts,
                self.metrics.clone(),
            );
            Ec2 {
                region: target.region.clone(),
                account: target.role.as_ref().map(|r| r.account_id().to_string()),
                api: Arc::new(sdk),
            }
        })
    }
}

/// The credentials of a role while STS may not be asked (see `sts_allowed`).
#[derive(Debug)]
struct NoSts;

impl aws_credential_types::provider::ProvideCredentials for NoSts {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "STS is not configured: EC2 goes to an endpoint override (AWS_ENDPOINT_URL_EC2 or --ec2-endpoint-url) but STS has none (set AWS_ENDPOINT_URL_STS or --sts-endpoint-url)",
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::FakeEc2;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn role(arn: &str) -> AccountAccess {
        AccountAccess {
            role_arn: arn.into(),
            external_id: None,
            session_name: None,
        }
    }

    /// Counts connects and hands out the fake's API under each target's region and account.
    struct Counting {
        fake: FakeEc2,
        made: AtomicUsize,
        limiters: std::sync::Mutex<Vec<(Target, Option<Arc<Limiter>>)>>,
    }

    impl Connect for Arc<Counting> {
        fn connect<'a>(
            &'a self,
            target: &'a Target,
            limiter: Option<Arc<Limiter>>,
        ) -> BoxFuture<'a, Ec2> {
            Box::pin(async move {
                self.made.fetch_add(1, Ordering::SeqCst);
                self.limiters
                    .lock()
                    .unwrap()
                    .push((target.clone(), limiter));
                let mut c = self.fake.handle();
                c.region = target.region.clone();
                c.account = target.role.as_ref().map(|r| r.account_id().to_string());
                c
            })
        }
    }

    #[tokio::test]
    async fn one_client_per_credentials_and_region_one_limiter_per_account_and_region() {
        let counting = Arc::new(Counting {
            fake: FakeEc2::standard(),
            made: AtomicUsize::new(0),
            limiters: Default::default(),
        });
        let mut home = counting.fake.handle();
        home.account = Some("123456789012".into());
        let home_limiter = Arc::new(Limiter::aws_defaults());
        let pool = Ec2Pool::new(
            home.clone(),
            Some(home_limiter.clone()),
            Box::new(counting.clone()),
            true,
        );
        let b = role("arn:aws:iam::111111111111:role/bpl");
        let b_other_role = role("arn:aws:iam::111111111111:role/other");
        let t = |r: Option<&AccountAccess>, region: &str| Target {
            role: r.cloned(),
            region: region.into(),
        };
        // The operator's own account and region: the home client, nothing made.
        let own = pool.client(&t(None, home.region.as_str())).await;
        assert!(Arc::ptr_eq(&own.api, &home.api));
        assert_eq!(counting.made.load(Ordering::SeqCst), 0);
        // Each (credentials, region) once, however often asked.
        for _ in 0..3 {
            let c = pool.client(&t(Some(&b), "us-east-1")).await;
            assert_eq!(c.account.as_deref(), Some("111111111111"));
            assert_eq!(c.region, "us-east-1");
        }
        assert_eq!(counting.made.load(Ordering::SeqCst), 1);
        let west = pool.client(&t(Some(&b), "us-west-2")).await;
        assert_eq!(west.region, "us-west-2");
        pool.client(&t(Some(&b_other_role), "us-east-1")).await;
        let own_west = pool.client(&t(None, "us-west-2")).await;
        assert_eq!(own_west.account.as_deref(), Some("123456789012"));
        assert_eq!(counting.made.load(Ordering::SeqCst), 4);
        assert_eq!(pool.clients_made().await, 4);
        // Limiters: per (account, region), not per role or client.
        let made = counting.limiters.lock().unwrap().clone();
        let limiter_of = |target: &Target| {
            made.iter()
                .find(|(t, _)| t == target)
                .and_then(|(_, l)| l.clone())
                .unwrap()
        };
        let b_east = limiter_of(&t(Some(&b), "us-east-1"));
        let b_west = limiter_of(&t(Some(&b), "us-west-2"));
        let b2_east = limiter_of(&t(Some(&b_other_role), "us-east-1"));
        let own_west = limiter_of(&t(None, "us-west-2"));
        assert!(
            Arc::ptr_eq(&b_east, &b2_east),
            "two roles of one account share its bucket"
        );
        assert!(
            !Arc::ptr_eq(&b_east, &b_west),
            "regions have buckets of their own"
        );
        assert!(
            !Arc::ptr_eq(&own_west, &b_west),
            "accounts have buckets of their own"
        );
        assert!(Arc::ptr_eq(
            &pool.limiter(Some("123456789012"), &home.region),
            &home_limiter
        ));
    }

    #[test]
    fn a_target_acts_in_its_roles_account() {
        let t = Target {
            role: Some(role("arn:aws:iam::210987654321:role/x")),
            region: "eu-west-1".into(),
        };
        assert_eq!(
            t.account(Some("123456789012")).as_deref(),
            Some("210987654321")
        );
        let own = Target {
            role: None,
            region: "eu-west-1".into(),
        };
        assert_eq!(
            own.account(Some("123456789012")).as_deref(),
            Some("123456789012")
        );
        assert_eq!(own.account(None), None);
        assert_eq!(
            limiter_key(None, "r"),
            ("self".to_string(), "r".to_string())
        );
    }
}
