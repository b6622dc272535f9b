//! The JSON codec: a batch as one JSON object.
//!
//! ```json
//! {"gateway":"gw-dongcun","seq":17,"readings":[
//!   {"device":"dongcun-pump","metric":"flow","ts":1763900000000,"value":31.25,"quality":"good"}]}
//! ```
//! `ts` is milliseconds since the Unix epoch; `quality` may be left out (good); `value`
//! may be `"NaN"`, `"Infinity"` or `"-Infinity"` so that such values reach validation.

use alloc::string::ToString;
use alloc::vec::Vec;

use super::DecodeError;
use crate::reading::Batch;

/// Encodes a batch as compact JSON.
pub fn encode(batch: &Batch) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_vec(batch).unwrap_or_default()
}

/// Decodes a JSON batch; the error carries serde_json's line and column.
pub fn decode(payload: &[u8]) -> Result<Batch, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))
}
