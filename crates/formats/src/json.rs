//! The `json` codec (`raw`'s is the contract's
//! [`RawCodec`](spate_connector::format::RawCodec)).
//!
//! `raw` passes bytes through both ways and never fails. `json` checks
//! that a payload is one well-formed JSON value (UTF-8, nothing after it
//! but whitespace) and otherwise passes it through unchanged, so decoding
//! costs one validating scan and no allocation.

use async_trait::async_trait;
use bytes::Bytes;

use super::{DecodeError, Decoded, EncodeError, PayloadDecoder, PayloadEncoder};

/// `format: json`.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonCodec;

/// Checks that `payload` is one JSON value; the error says where not.
pub(super) fn validate(payload: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload)
        .map(|_| ())
        .map_err(|e| format!("payload is not JSON: {e}"))
}

#[async_trait]
impl PayloadDecoder for JsonCodec {
    async fn decode(&self, payload: &Bytes) -> Result<Decoded, DecodeError> {
        validate(payload).map_err(|m| DecodeError::permanent(m, None))?;
        Ok(Decoded {
            payload: payload.clone(),
            schema_id: None,
        })
    }
}

#[async_trait]
impl PayloadEncoder for JsonCodec {
    async fn encode(&self, json: &Bytes) -> Result<Bytes, EncodeError> {
        validate(json).map_err(EncodeError::permanent)?;
        Ok(json.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_connector::format::RawCodec;

    #[tokio::test]
    async fn json_is_validated_and_passed_through() {
        let good = Bytes::from_static(br#"{"a": [1, 2.5, "x"]}"#);
        let decoded = JsonCodec.decode(&good).await.expect("valid JSON");
        assert_eq!(decoded.payload, good);
        assert_eq!(JsonCodec.encode(&good).await, Ok(good));

        for bad in [&b"{\"a\": "[..], b"not json", b"{} {}", b"\xff"] {
            let err = JsonCodec
                .decode(&Bytes::copy_from_slice(bad))
                .await
                .expect_err("invalid JSON");
            assert!(!err.retryable);
            assert!(err.message.starts_with("payload is not JSON"), "{err}");
        }
    }

    #[tokio::test]
    async fn raw_never_touches_bytes() {
        let bytes = Bytes::from_static(b"\x00\xffanything");
        assert_eq!(
            RawCodec.decode(&bytes).await.map(|d| d.payload),
            Ok(bytes.clone())
        );
        assert_eq!(RawCodec.encode(&bytes).await, Ok(bytes));
    }
}
