//! Station-to-station JSON requests on the internal routes, and the wire forms that carry bytes.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::cluster::forward::SECRET_HEADER;

/// POSTs JSON to `address` + `path` with the cluster secret and decodes the JSON answer.
pub async fn post_json<B: Serialize, R: for<'de> Deserialize<'de>>(
    cluster: &Cluster,
    address: &str,
    path: &str,
    body: &B,
    timeout: Duration,
) -> anyhow::Result<R> {
    send(
        cluster,
        cluster.http().post(format!("{address}{path}")).json(body),
        address,
        path,
        timeout,
    )
    .await
}

async fn send<R: for<'de> Deserialize<'de>>(
    cluster: &Cluster,
    mut request: reqwest::RequestBuilder,
    address: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<R> {
    request = request.timeout(timeout);
    if let Some(secret) = cluster.secret() {
        request = request.header(SECRET_HEADER, secret);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!(
            "{path} on {address} answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response.json().await?)
}

/// JSON with every non-ASCII character written as a `\u` escape (four hex digits), so it fits in an
/// HTTP header value (a version record's note may be any text).
pub fn header_json<T: Serialize>(value: &T) -> anyhow::Result<String> {
    let text = serde_json::to_string(value)?;
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            ascii.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(ascii)
}

/// Bytes as base64 in JSON (component bytes in a migration).
pub mod base64_bytes {
    use super::*;

    /// Serializes bytes as a base64 string.
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Deserializes a base64 string.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_json_is_ascii_and_round_trips() {
        let value = serde_json::json!({"note": "déploiement ✓ 🚀", "by": "ops"});
        let text = header_json(&value).unwrap();
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text}");
        assert!(axum::http::HeaderValue::from_str(&text).is_ok());
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
