//! The group robots of the chat apps counties use: their message formats, their signing
//! and how they answer. Pure functions (no I/O), so each format and signature is tested
//! against vectors computed elsewhere.
//!
//! Checked against the vendors' documentation (2026-12-03):
//!
//! - **WeCom (企业微信) group robot**, "群机器人配置说明",
//!   <https://developer.work.weixin.qq.com/document/path/91770> (also
//!   <https://work.weixin.qq.com/api/doc/90000/90136/91770>): `POST
//!   https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY`, body `{"msgtype": "text",
//!   "text": {"content", "mentioned_list", "mentioned_mobile_list"}}` (content at most 2048
//!   bytes, UTF-8) or `{"msgtype": "markdown", "markdown": {"content"}}` (at most 4096
//!   bytes; `<font color="warning|comment|info">`, `<@userid>` mentions). No signature:
//!   the key in the URL is the secret. Answers `{"errcode": 0, "errmsg": "ok"}`; at most
//!   20 messages a minute per robot (errcode 45009 beyond).
//! - **DingTalk (钉钉) custom robot**, "自定义机器人安全设置" (加签),
//!   <https://open.dingtalk.com/document/robots/customize-robot-security-settings>
//!   (English: <https://help.dingtalk.io/open/dingstart/customize-robot-security-settings>):
//!   `string_to_sign = timestamp + "\n" + secret`, HMAC-SHA256 keyed with the secret,
//!   Base64, then URL-encoded (UTF-8); `timestamp` in milliseconds, within an hour of
//!   DingTalk's clock; both appended to the webhook URL as `&timestamp=..&sign=..`.
//!   Sending, "自定义机器人发送群消息",
//!   <https://open.dingtalk.com/document/group/custom-robot-access> (English:
//!   <https://help.dingtalk.io/open/development/custom-robots-send-group-messages>):
//!   `{"msgtype": "text", "text": {"content"}, "at": {"atMobiles", "atUserIds",
//!   "isAtAll"}}` or `{"msgtype": "markdown", "markdown": {"title", "text"}, "at": ..}`
//!   (a mention shows only when `@mobile` is also in the text); answers `{"errcode": 0,
//!   "errmsg": "ok"}`; 20 messages a minute per robot, then 10 minutes of throttling.
//! - **Feishu/Lark (飞书) custom bot**, "自定义机器人使用指南",
//!   <https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot> (mirror:
//!   <https://open.larkoffice.com/document/ukTMukTMukTM/ucTM5YjL3ETO24yNxkjN>): `POST
//!   https://open.feishu.cn/open-apis/bot/v2/hook/ID`, body `{"msg_type": "text",
//!   "content": {"text"}}`; with 签名校验, `timestamp` (seconds, within an hour) and
//!   `sign` in the body, `sign` = Base64 of HMAC-SHA256 *keyed with* `timestamp + "\n" +
//!   secret` over an empty message (the vendor's SignDemo; not DingTalk's way round).
//!   Mentions: `<at user_id="ou_xxx"></at>` in the text. Answers `{"code": 0, "msg":
//!   "success"}` (older answers carry `StatusCode`); 19021 is a bad signature, 11232 rate
//!   limiting (100 a minute, 5 a second per bot); bodies at most 20 KB.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::alerts::config::MessageFormat;
use crate::alerts::notice::Message;

/// Whom a message mentions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mentions {
    /// Mobile numbers (WeCom, DingTalk).
    pub mobiles: Vec<String>,
    /// User ids (WeCom userid, DingTalk userId, Feishu open_id/user_id).
    pub user_ids: Vec<String>,
}

/// A request to a robot: where, and the JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The URL, signature parameters included (DingTalk).
    pub url: String,
    /// The body.
    pub body: Value,
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// DingTalk's `sign` before URL encoding: Base64(HMAC-SHA256(key = secret, message =
/// `"{timestamp_ms}\n{secret}"`)).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    BASE64.encode(hmac_sha256(secret.as_bytes(), format!("{timestamp_ms}\n{secret}").as_bytes()))
}

/// Feishu's `sign`: Base64(HMAC-SHA256(key = `"{timestamp_s}\n{secret}"`, message = "")).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    BASE64.encode(hmac_sha256(format!("{timestamp_s}\n{secret}").as_bytes(), b""))
}

/// Cuts `s` to at most `max` bytes at a character boundary, marking the cut.
fn fit(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn with_keyword(text: String, keyword: Option<&str>) -> String {
    match keyword {
        Some(k) if !text.contains(k) => format!("{k} {text}"),
        _ => text,
    }
}

/// WeCom's content limits (bytes).
const WECOM_TEXT_BYTES: usize = 2048;
const WECOM_MARKDOWN_BYTES: usize = 4096;

/// A WeCom group robot message.
pub fn wecom(url: &str, msg: &Message, format: MessageFormat, mentions: &Mentions, keyword: Option<&str>) -> Request {
    let body = match format {
        MessageFormat::Text => json!({
            "msgtype": "text",
            "text": {
                "content": fit(with_keyword(msg.text(), keyword), WECOM_TEXT_BYTES),
                "mentioned_list": mentions.user_ids,
                "mentioned_mobile_list": mentions.mobiles,
            },
        }),
        MessageFormat::Markdown => {
            let mut content = with_keyword(msg.wecom_markdown(), keyword);
            for u in &mentions.user_ids {
                content.push_str(&format!(" <@{u}>"));
            }
            json!({ "msgtype": "markdown", "markdown": { "content": fit(content, WECOM_MARKDOWN_BYTES) } })
        }
    };
    Request { url: url.to_string(), body }
}

/// A DingTalk custom robot message, signed at `timestamp_ms` when there is a secret.
pub fn dingtalk(
    url: &str,
    secret: Option<&str>,
    timestamp_ms: i64,
    msg: &Message,
    format: MessageFormat,
    mentions: &Mentions,
    keyword: Option<&str>,
) -> Request {
    // A mention shows only when the text names it too.
    let tags: String = mentions.mobiles.iter().chain(&mentions.user_ids).map(|m| format!(" @{m}")).collect();
    let at = json!({ "atMobiles": mentions.mobiles, "atUserIds": mentions.user_ids, "isAtAll": false });
    let body = match format {
        MessageFormat::Text => json!({
            "msgtype": "text",
            "text": { "content": format!("{}{tags}", with_keyword(msg.text(), keyword)) },
            "at": at,
        }),
        MessageFormat::Markdown => json!({
            "msgtype": "markdown",
            "markdown": {
                "title": with_keyword(msg.title.clone(), keyword),
                "text": format!("{}{tags}", with_keyword(msg.dingtalk_markdown(), keyword)),
            },
            "at": at,
        }),
    };
    let url = match secret {
        Some(secret) => signed_url(url, timestamp_ms, &dingtalk_sign(secret, timestamp_ms)),
        None => url.to_string(),
    };
    Request { url, body }
}

/// `url` with `timestamp` and `sign` appended as query parameters, URL-encoded.
fn signed_url(url: &str, timestamp_ms: i64, sign: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}timestamp={timestamp_ms}&sign={}", url_encode(sign))
}

/// Percent-encoding of everything but RFC 3986's unreserved characters (what Base64's
/// `+`, `/` and `=` need in a query).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Feishu's body limit (bytes); the text is cut well inside it.
const FEISHU_TEXT_BYTES: usize = 16_000;

/// A Feishu/Lark custom bot message, signed at `timestamp_s` when there is a secret.
pub fn feishu(
    url: &str,
    secret: Option<&str>,
    timestamp_s: i64,
    msg: &Message,
    mentions: &Mentions,
    keyword: Option<&str>,
) -> Request {
    let mut text = with_keyword(msg.text(), keyword);
    for u in &mentions.user_ids {
        text.push_str(&format!(" <at user_id=\"{u}\"></at>"));
    }
    let mut body = json!({ "msg_type": "text", "content": { "text": fit(text, FEISHU_TEXT_BYTES) } });
    if let (Some(secret), Value::Object(m)) = (secret, &mut body) {
        m.insert("timestamp".into(), Value::String(timestamp_s.to_string()));
        m.insert("sign".into(), Value::String(feishu_sign(secret, timestamp_s)));
    }
    Request { url: url.to_string(), body }
}

/// Why a robot did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The robot's error code, when it answered with one.
    pub code: Option<i64>,
    /// What it said (or the HTTP status).
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "code {c}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Reads a robot's answer: `Ok` only for HTTP 2xx with a zero error code (`errcode` for
/// WeCom and DingTalk, `code` or the older `StatusCode` for Feishu).
pub fn answer(status: u16, body: &[u8]) -> Result<(), Refusal> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let code = json
        .as_ref()
        .and_then(|j| ["errcode", "code", "StatusCode"].iter().find_map(|k| j.get(*k).and_then(Value::as_i64)));
    let said = json
        .as_ref()
        .and_then(|j| ["errmsg", "msg", "StatusMessage"].iter().find_map(|k| j.get(*k).and_then(Value::as_str)))
        .map(str::to_string);
    if !(200..300).contains(&status) {
        return Err(Refusal { code, message: said.unwrap_or_else(|| format!("HTTP {status}")) });
    }
    match code {
        Some(0) => Ok(()),
        Some(c) => Err(Refusal { code: Some(c), message: said.unwrap_or_default() }),
        None => Err(Refusal { code: None, message: "the answer carries no error code".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::Language;

    fn msg() -> Message {
        Message {
            title: "【严重告警】出厂水余氯偏低".into(),
            rows: vec![("地点".into(), "水厂 wq-1".into()), ("数值".into(), "余氯 0.02 mg/L".into())],
            lang: Language::Zh,
            critical: true,
        }
    }

    // Vectors computed independently of this code, once, with Python's standard library:
    //
    // python3 -c 'import hmac,hashlib,base64,urllib.parse as u
    // s="SECabc123"; t=1796277900000
    // b=base64.b64encode(hmac.new(s.encode(),f"{t}\n{s}".encode(),hashlib.sha256).digest()).decode()
    // print(b, u.quote_plus(b))
    // s2="feishu-secret"; t2=1796277900
    // print(base64.b64encode(hmac.new(f"{t2}\n{s2}".encode(),b"",hashlib.sha256).digest()).decode())'
    // printed: /FXOdIxYQSWwZIdeCFaoVoxoXA8+ut72Adp22sHKCaY= %2FFXOdIxYQSWwZIdeCFaoVoxoXA8%2But72Adp22sHKCaY%3D
    //          6JJSeQo5ii7Nha4xclt9dWc9wXJMcHqqTobBgPMZQKs=
    const DINGTALK_SIGN: &str = "/FXOdIxYQSWwZIdeCFaoVoxoXA8+ut72Adp22sHKCaY=";
    const DINGTALK_SIGN_URL: &str = "%2FFXOdIxYQSWwZIdeCFaoVoxoXA8%2But72Adp22sHKCaY%3D";
    const FEISHU_SIGN: &str = "6JJSeQo5ii7Nha4xclt9dWc9wXJMcHqqTobBgPMZQKs=";

    #[test]
    fn the_dingtalk_signature_matches_an_independent_computation() {
        assert_eq!(dingtalk_sign("SECabc123", 1_796_277_900_000), DINGTALK_SIGN);
        let r = dingtalk(
            "https://oapi.dingtalk.com/robot/send?access_token=T0K",
            Some("SECabc123"),
            1_796_277_900_000,
            &msg(),
            MessageFormat::Text,
            &Mentions::default(),
            None,
        );
        assert_eq!(
            r.url,
            format!(
                "https://oapi.dingtalk.com/robot/send?access_token=T0K&timestamp=1796277900000&sign={DINGTALK_SIGN_URL}"
            )
        );
        // Positive control: another secret or time signs differently.
        assert_ne!(dingtalk_sign("SECabc124", 1_796_277_900_000), DINGTALK_SIGN);
        assert_ne!(dingtalk_sign("SECabc123", 1_796_277_900_001), DINGTALK_SIGN);
    }

    #[test]
    fn the_feishu_signature_is_keyed_with_timestamp_and_secret_over_nothing() {
        assert_eq!(feishu_sign("feishu-secret", 1_796_277_900), FEISHU_SIGN);
        let r = feishu(
            "https://open.feishu.cn/open-apis/bot/v2/hook/abc",
            Some("feishu-secret"),
            1_796_277_900,
            &msg(),
            &Mentions { mobiles: vec![], user_ids: vec!["ou_1".into()] },
            None,
        );
        assert_eq!(r.body["timestamp"], "1796277900", "a string of seconds");
        assert_eq!(r.body["sign"], FEISHU_SIGN);
        assert_eq!(r.body["msg_type"], "text");
        assert_eq!(
            r.body["content"]["text"],
            "【严重告警】出厂水余氯偏低\n地点：水厂 wq-1\n数值：余氯 0.02 mg/L <at user_id=\"ou_1\"></at>"
        );
        // DingTalk's way round (keyed with the secret) is not Feishu's.
        assert_ne!(BASE64.encode(hmac_sha256(b"feishu-secret", b"1796277900\nfeishu-secret")), FEISHU_SIGN);
        // Unsigned without a secret.
        let r = feishu("https://x/hook", None, 1, &msg(), &Mentions::default(), None);
        assert!(r.body.get("sign").is_none() && r.body.get("timestamp").is_none());
    }

    #[test]
    fn wecom_messages_are_text_or_markdown_with_mentions_and_fit_the_limits() {
        let m = Mentions { mobiles: vec!["13800000001".into()], user_ids: vec!["zhangsan".into()] };
        let r = wecom("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K", &msg(), MessageFormat::Text, &m, None);
        assert_eq!(
            r.body,
            json!({"msgtype": "text", "text": {
                "content": "【严重告警】出厂水余氯偏低\n地点：水厂 wq-1\n数值：余氯 0.02 mg/L",
                "mentioned_list": ["zhangsan"], "mentioned_mobile_list": ["13800000001"]}})
        );
        let r = wecom("https://x", &msg(), MessageFormat::Markdown, &m, Some("告警"));
        assert_eq!(r.body["msgtype"], "markdown");
        let content = r.body["markdown"]["content"].as_str().unwrap_or_default();
        assert!(content.starts_with("<font color=\"warning\">**【严重告警】"), "{content}");
        assert!(content.ends_with(" <@zhangsan>"), "{content}");
        let long = Message { rows: vec![("x".into(), "长".repeat(2000))], ..msg() };
        let r = wecom("https://x", &long, MessageFormat::Text, &Mentions::default(), None);
        let content = r.body["text"]["content"].as_str().unwrap_or_default();
        assert!(content.len() <= 2048 && content.ends_with('…'), "{}", content.len());
    }

    #[test]
    fn dingtalk_mentions_are_in_the_at_block_and_the_text() {
        let m = Mentions { mobiles: vec!["13800000002".into()], user_ids: vec![] };
        let r = dingtalk("https://x/robot/send?access_token=T", None, 1, &msg(), MessageFormat::Markdown, &m, None);
        assert_eq!(r.url, "https://x/robot/send?access_token=T", "unsigned without a secret");
        assert_eq!(r.body["msgtype"], "markdown");
        assert_eq!(r.body["markdown"]["title"], "【严重告警】出厂水余氯偏低");
        assert!(r.body["markdown"]["text"].as_str().unwrap_or_default().ends_with(" @13800000002"));
        assert_eq!(r.body["at"], json!({"atMobiles": ["13800000002"], "atUserIds": [], "isAtAll": false}));
    }

    #[test]
    fn robot_answers_with_an_error_code_are_refusals() {
        assert_eq!(answer(200, br#"{"errcode":0,"errmsg":"ok"}"#), Ok(()));
        assert_eq!(answer(200, br#"{"code":0,"msg":"success","data":{}}"#), Ok(()));
        assert_eq!(answer(200, br#"{"StatusCode":0,"StatusMessage":"success"}"#), Ok(()));
        let e = answer(200, br#"{"errcode":45009,"errmsg":"api freq out of limit"}"#).unwrap_err();
        assert_eq!(e.code, Some(45009));
        let e = answer(
            200,
            br#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, Some(19021));
        assert_eq!(answer(429, b"").unwrap_err().message, "HTTP 429");
        assert!(answer(200, b"ok").is_err(), "an answer without a code is not an acceptance");
    }
}
