//! Why ingest refuses input: the one vocabulary of refusal reasons.
//!
//! Validation gives every refusal a [`Reason`]; metrics count by it (a Prometheus label)
//! and the API shows it, with a sentence in Chinese for the page ([`Reason::zh`]). It sits
//! at the bottom of ingest's module graph so that both can
//! name it without depending on the pipeline.

use serde::Serialize;

/// Why something was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not a batch in either codec.
    Malformed,
    /// Larger than the payload limit.
    Oversized,
    /// The batch names another gateway than its topic, or the topic another tenant than
    /// the gateway's: a gateway publishing as another.
    TopicMismatch,
    /// The topic's gateway is not in the inventory.
    UnknownGateway,
    /// The reading's device is not in the inventory.
    UnknownDevice,
    /// The device belongs to another gateway.
    ForeignDevice,
    /// The metric is not in the catalogue.
    UnknownMetric,
    /// NaN or infinite.
    NotANumber,
    /// Outside the metric's physically plausible range.
    OutOfRange,
    /// Taken further in the future than clock skew explains.
    TimestampFuture,
    /// Older than the accepted age.
    TimestampPast,
    /// The batch's seq skips past batches of its gateway that were not stored: held back
    /// until the missing ones arrive (or the hold expires), see `crate::pipeline::gaps`.
    SeqGap,
    /// The message does not verify with the link key of its topic's gateway (forged,
    /// tampered, moved, an unknown key or a gateway not enrolled).
    BadSignature,
    /// The message is not an authenticated envelope at all.
    Unsigned,
    /// A verified message whose counter was seen already, or is older than the last.
    Replayed,
    /// The batch's seq is further past the gateway's stored mark than its queue could hold.
    SeqOutOfRange,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 16] = [
        Reason::Malformed,
        Reason::Oversized,
        Reason::TopicMismatch,
        Reason::UnknownGateway,
        Reason::UnknownDevice,
        Reason::ForeignDevice,
        Reason::UnknownMetric,
        Reason::NotANumber,
        Reason::OutOfRange,
        Reason::TimestampFuture,
        Reason::TimestampPast,
        Reason::SeqGap,
        Reason::BadSignature,
        Reason::Unsigned,
        Reason::Replayed,
        Reason::SeqOutOfRange,
    ];

    /// Stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Oversized => "oversized",
            Reason::TopicMismatch => "topic_mismatch",
            Reason::UnknownGateway => "unknown_gateway",
            Reason::UnknownDevice => "unknown_device",
            Reason::ForeignDevice => "foreign_device",
            Reason::UnknownMetric => "unknown_metric",
            Reason::NotANumber => "not_a_number",
            Reason::OutOfRange => "out_of_range",
            Reason::TimestampFuture => "timestamp_future",
            Reason::TimestampPast => "timestamp_past",
            Reason::SeqGap => "seq_gap",
            Reason::BadSignature => "bad_signature",
            Reason::Unsigned => "unsigned",
            Reason::Replayed => "replayed",
            Reason::SeqOutOfRange => "seq_out_of_range",
        }
    }

    /// What it means, in Chinese, for the page in Chinese (`reason_zh`).
    pub const fn zh(self) -> &'static str {
        match self {
            Reason::Malformed => "格式错误：不是有效的数据批次",
            Reason::Oversized => "数据过大：超过报文大小上限",
            Reason::TopicMismatch => "主题不符：网关冒用其他网关或租户的身份",
            Reason::UnknownGateway => "未知网关：不在设备清单中",
            Reason::UnknownDevice => "未知设备：不在设备清单中",
            Reason::ForeignDevice => "设备不属于该网关",
            Reason::UnknownMetric => "未知指标：不在指标目录中",
            Reason::NotANumber => "数值无效（NaN 或无穷大）",
            Reason::OutOfRange => "数值超出该指标的合理范围",
            Reason::TimestampFuture => "时间戳超前：超出允许的时钟偏差",
            Reason::TimestampPast => "时间戳过旧：超出可接受的时限",
            Reason::SeqGap => "批次序号不连续：等待缺失的批次",
            Reason::BadSignature => "签名校验失败：伪造、篡改或网关未登记",
            Reason::Unsigned => "未签名的报文",
            Reason::Replayed => "重放的报文：计数器已用过",
            Reason::SeqOutOfRange => "批次序号超出网关队列范围",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_chinese_text() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(!r.zh().is_empty() && r.zh().chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "{r:?}");
            assert!(seen.insert(r.zh()), "{r:?} shares its text");
        }
    }
}
