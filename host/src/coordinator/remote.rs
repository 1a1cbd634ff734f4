//! Calls between stations: the cluster's one-hop forwarding, offered to the station as its
//! [`RemoteCalls`] so an object can call an object homed elsewhere.

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::cluster::forward::{CHAIN_HEADER, DEADLINE_HEADER};
use crate::cluster::{Cluster, ForwardError, ForwardRequest};
use crate::runtime::{CallChain, CallError, ObjectRequest, ObjectResponse};
use crate::station::RemoteCalls;

/// Object-to-object calls that leave this station.
pub struct ClusterCalls {
    /// The cluster view and HTTP client.
    pub cluster: Cluster,
}

impl RemoteCalls for ClusterCalls {
    fn call(
        &self,
        target: String,
        request: ObjectRequest,
        chain: CallChain,
    ) -> BoxFuture<'static, Option<Result<ObjectResponse, CallError>>> {
        let cluster = self.cluster.clone();
        async move {
            let (station, address) = match cluster.home_of(&target) {
                Some(home) => (home.station, home.address),
                None => match cluster.stateless_target(&target) {
                    Some(target) => target,
                    // Not applied here yet: ask the leader before the call answers 404.
                    None => {
                        let entry = cluster
                            .directory()
                            .lookup_linearizable(&target)
                            .await
                            .ok()??;
                        let home = cluster.home_from(entry)?;
                        (home.station, home.address)
                    }
                },
            };
            if station == cluster.station_id() {
                return None;
            }
            Some(call_remote(&cluster, &address, &target, request, &chain).await)
        }
        .boxed()
    }
}

async fn call_remote(
    cluster: &Cluster,
    address: &str,
    target: &str,
    request: ObjectRequest,
    chain: &CallChain,
) -> Result<ObjectResponse, CallError> {
    let remaining = chain.deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(CallError::Timeout);
    }
    let mut headers = http::HeaderMap::new();
    for (name, value) in &request.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value.as_str()),
        ) {
            headers.append(name, value);
        }
    }
    let set = |headers: &mut http::HeaderMap, name: &'static str, value: String| {
        if let Ok(value) = http::HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    set(&mut headers, CHAIN_HEADER, chain.objects.join(","));
    set(
        &mut headers,
        DEADLINE_HEADER,
        remaining.as_millis().to_string(),
    );
    set(&mut headers, "x-request-id", chain.request_id.clone());
    // The caller's span is the parent of the call's span at the callee's station.
    set(
        &mut headers,
        crate::trace::TRACEPARENT,
        chain.trace.header(),
    );
    let mut path = format!(
        "/objects/{target}{}",
        if request.path == "/" {
            ""
        } else {
            request.path.as_str()
        }
    );
    if !request.query.is_empty() {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&request.query)
            .finish();
        path.push('?');
        path.push_str(&query);
    }
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| CallError::Invalid(format!("bad method {}", request.method)))?;
    let forwarded = cluster
        .forward(ForwardRequest {
            base_url: address.to_string(),
            method,
            path_and_query: path,
            headers,
            body: request.body.into(),
            timeout: remaining + Duration::from_millis(250),
        })
        .await
        .map_err(|e| match e {
            ForwardError::Timeout(_) => CallError::Timeout,
            ForwardError::Unavailable { .. } => CallError::Unavailable(e.to_string()),
        })?;
    // The callee station's own errors arrive as JSON with a stable code: turn them back into the
    // call-error the caller would have seen locally.
    if let Some(code) = forwarded
        .headers
        .get(crate::cluster::forward::ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        let message = serde_json::from_slice::<serde_json::Value>(&forwarded.body)
            .ok()
            .and_then(|body| {
                body.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        match code {
            "object_not_found" => return Err(CallError::NotFound(message)),
            "loop_detected" => return Err(CallError::LoopDetected(message)),
            "deadline_exceeded" => return Err(CallError::Timeout),
            "trapped" => return Err(CallError::Trapped(message)),
            "not_ready" | "activation_failed" | "not_home" => {
                return Err(CallError::Unavailable(message));
            }
            _ => {}
        }
    }
    Ok(ObjectResponse {
        status: forwarded.status.as_u16(),
        headers: forwarded
            .headers
            .iter()
            .filter(|(name, _)| name.as_str() != "x-request-id")
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: forwarded.body.to_vec(),
    })
}
