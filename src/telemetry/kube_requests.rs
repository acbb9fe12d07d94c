//! A tower layer on the kube Client that counts every request sent to the API server by verb
//! (Kubernetes' own names: get list watch create update patch delete deletecollection) and
//! resource, as `bpl_kube_requests_total{verb,resource}`.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::Metrics;

#[derive(Clone)]
pub struct CountRequestsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (verb, resource) = classify(req.method().as_str(), req.uri().path(), req.uri().query());
        self.metrics.record_kube_request(verb, &resource);
        self.inner.call(req)
    }
}

/// The Kubernetes verb and resource (`configmaps`, `bedrockprivatelinks/status`) of a request.
pub fn classify(method: &str, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/...; anything else (/version, /openapi) is "other".
    let rest: &[&str] = match segs.as_slice() {
        ["api", _v, rest @ ..] => rest,
        ["apis", _g, _v, rest @ ..] => rest,
        _ => &[],
    };
    // namespaces/<ns>/<resource>... is namespaced; namespaces and namespaces/<name> are the
    // namespace resource itself.
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        r => r,
    };
    let resource = match rest {
        [] => "other".to_string(),
        [r] | [r, _] => r.to_string(),
        [r, _, sub, ..] => format!("{r}/{sub}"),
    };
    let collection = rest.len() == 1;
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match method {
        "GET" if watch => "watch",
        "GET" if collection => "list",
        "GET" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if collection => "deletecollection",
        "DELETE" => "delete",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_resources() {
        let bpl = "/apis/bedrock.privatelink.io/v1alpha1/namespaces/ns/bedrockprivatelinks";
        let cases = [
            (
                "GET",
                bpl.to_string(),
                Some("watch=true&resourceVersion=1"),
                "watch",
                "bedrockprivatelinks",
            ),
            (
                "GET",
                bpl.to_string(),
                Some("limit=500"),
                "list",
                "bedrockprivatelinks",
            ),
            (
                "GET",
                format!("{bpl}/a"),
                None,
                "get",
                "bedrockprivatelinks",
            ),
            (
                "PATCH",
                format!("{bpl}/a/status"),
                Some("fieldManager=x"),
                "patch",
                "bedrockprivatelinks/status",
            ),
            (
                "PATCH",
                format!("{bpl}/a"),
                None,
                "patch",
                "bedrockprivatelinks",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/ns/configmaps/c".into(),
                None,
                "delete",
                "configmaps",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/ns/configmaps".into(),
                None,
                "deletecollection",
                "configmaps",
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/ns/events".into(),
                None,
                "create",
                "events",
            ),
            (
                "GET",
                "/api/v1/namespaces".into(),
                None,
                "list",
                "namespaces",
            ),
            (
                "GET",
                "/api/v1/namespaces/ns".into(),
                None,
                "get",
                "namespaces",
            ),
            ("GET", "/api/v1/nodes".into(), None, "list", "nodes"),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l".into(),
                None,
                "update",
                "leases",
            ),
            ("GET", "/version".into(), None, "get", "other"),
        ];
        for (method, path, query, verb, resource) in cases {
            let (v, r) = classify(method, &path, query);
            assert_eq!((v, r.as_str()), (verb, resource), "{method} {path}");
        }
    }
}
