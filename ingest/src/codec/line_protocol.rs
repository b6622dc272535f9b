//! InfluxDB line protocol: the parser the line-protocol source (`/api/v2/write`) uses, and
//! the writer the InfluxDB sink uses.
//!
//! ```text
//! measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]
//! ```
//!
//! Escapes as InfluxDB defines them: in the measurement `\,` and `\ `; in tag keys, tag
//! values and field keys also `\=`; in string field values `\"` and `\\`. Field values are
//! floats (`1.5`, `-2e3`, `7`), integers (`7i`), unsigned integers (`7u`), strings
//! (`"text"`) and booleans (`t`, `true`, `F`, `FALSE`, ...). Lines starting with `#` and
//! empty lines are skipped.
//!
//! Design constraints:
//! - The body is outside input: every malformed line is an error naming its number and
//!   reason, never a panic; nothing is indexed without a bounds check.
//! - The hot path (no escapes) borrows from the body: a line costs no allocation beyond the
//!   reused field and tag vectors of [`LineBuf`].

use std::borrow::Cow;
use std::fmt::Write as _;

/// Timestamp precision of a write (`precision=` of `/api/v2/write`, or v1's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (the default).
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
}

impl Precision {
    /// Parses `ns`, `us`, `ms`, `s` (and v1's `n`, `u`, `µ`).
    pub fn parse(text: &str) -> Option<Precision> {
        match text {
            "ns" | "n" => Some(Precision::Nanoseconds),
            "us" | "u" | "µ" | "µs" => Some(Precision::Microseconds),
            "ms" => Some(Precision::Milliseconds),
            "s" => Some(Precision::Seconds),
            _ => None,
        }
    }

    /// A timestamp in this precision as milliseconds (truncated towards the past, as
    /// VictoriaMetrics does); `None` if it does not fit.
    pub fn to_millis(self, t: i64) -> Option<i64> {
        match self {
            Precision::Nanoseconds => Some(t.div_euclid(1_000_000)),
            Precision::Microseconds => Some(t.div_euclid(1_000)),
            Precision::Milliseconds => Some(t),
            Precision::Seconds => t.checked_mul(1_000),
        }
    }
}

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    /// A float (no suffix).
    Float(f64),
    /// An integer (`i` suffix).
    Int(i64),
    /// An unsigned integer (`u` suffix).
    UInt(u64),
    /// A boolean.
    Bool(bool),
    /// A string (unescaped).
    Str(Cow<'a, str>),
}

impl FieldValue<'_> {
    /// The value as a number, if it is one (booleans are 1 and 0; strings are not).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Float(v) => Some(*v),
            FieldValue::Int(v) => Some(*v as f64),
            FieldValue::UInt(v) => Some(*v as f64),
            FieldValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            FieldValue::Str(_) => None,
        }
    }
}

/// One parsed line, borrowing from the body. Reused between lines (see [`parse_line`]).
#[derive(Debug, Default)]
pub struct LineBuf<'a> {
    /// The measurement (unescaped).
    pub measurement: Cow<'a, str>,
    /// Tags in the order written (unescaped).
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Fields in the order written (unescaped keys).
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// The timestamp as written (in the write's precision), if any.
    pub timestamp: Option<i64>,
}

impl<'a> LineBuf<'a> {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }
}

/// Why a line does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub &'static str);

/// Parses one line (without its newline) into `out`. Returns `Ok(false)` for a blank or
/// comment line.
pub fn parse_line<'a>(line: &'a str, out: &mut LineBuf<'a>) -> Result<bool, SyntaxError> {
    out.tags.clear();
    out.fields.clear();
    out.timestamp = None;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(false);
    }
    let b = trimmed.as_bytes();
    let s = trimmed;

    // Measurement: up to an unescaped ',' or ' ' ('=' is allowed unescaped in it).
    let end = scan(b, 0, b", ");
    if end == 0 {
        return Err(SyntaxError("missing measurement"));
    }
    out.measurement = unescape(&s[..end]);
    let mut pos = end;

    // Tags.
    while b.get(pos) == Some(&b',') {
        pos += 1;
        let k_end = scan(b, pos, b",= ");
        if b.get(k_end) != Some(&b'=') {
            return Err(SyntaxError("tag without '='"));
        }
        if k_end == pos {
            return Err(SyntaxError("empty tag key"));
        }
        let key = unescape(&s[pos..k_end]);
        let v_start = k_end + 1;
        let v_end = scan(b, v_start, b",= ");
        if v_end == v_start {
            return Err(SyntaxError("empty tag value"));
        }
        if b.get(v_end) == Some(&b'=') {
            return Err(SyntaxError("unescaped '=' in a tag value"));
        }
        out.tags.push((key, unescape(&s[v_start..v_end])));
        pos = v_end;
    }
    if b.get(pos) != Some(&b' ') {
        return Err(SyntaxError("missing fields"));
    }
    while b.get(pos) == Some(&b' ') {
        pos += 1;
    }

    // Fields.
    loop {
        let k_end = scan(b, pos, b",= ");
        if b.get(k_end) != Some(&b'=') {
            return Err(SyntaxError("field without '='"));
        }
        if k_end == pos {
            return Err(SyntaxError("empty field key"));
        }
        let key = unescape(&s[pos..k_end]);
        let v_start = k_end + 1;
        let (value, v_end) = field_value(s, v_start)?;
        out.fields.push((key, value));
        pos = v_end;
        match b.get(pos) {
            Some(b',') => pos += 1,
            Some(b' ') | None => break,
            Some(_) => return Err(SyntaxError("unexpected character after a field value")),
        }
    }

    // Timestamp.
    while b.get(pos) == Some(&b' ') {
        pos += 1;
    }
    if pos < b.len() {
        let rest = s[pos..].trim_end();
        let ts = rest.parse::<i64>().map_err(|_| SyntaxError("timestamp is not an integer"))?;
        out.timestamp = Some(ts);
    }
    Ok(true)
}

/// The end of the token starting at `from`: the first unescaped byte of `stops`.
fn scan(b: &[u8], from: usize, stops: &[u8]) -> usize {
    let mut i = from;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            i += 2;
            continue;
        }
        if stops.contains(&c) {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// Removes backslash escapes of `,`, `=`, ` ` and `\`; borrows when there are none.
fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (',' | '=' | ' ' | '\\')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Parses the field value at `start`; returns it and where it ends.
fn field_value(s: &str, start: usize) -> Result<(FieldValue<'_>, usize), SyntaxError> {
    let b = s.as_bytes();
    match b.get(start) {
        None | Some(b' ') | Some(b',') => Err(SyntaxError("empty field value")),
        Some(b'"') => {
            let mut i = start + 1;
            let mut escaped = false;
            loop {
                match b.get(i) {
                    None => return Err(SyntaxError("unterminated string field")),
                    Some(b'\\') => {
                        escaped = true;
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            let raw = s.get(start + 1..i).ok_or(SyntaxError("unterminated string field"))?;
            let value = if escaped { Cow::Owned(raw.replace("\\\"", "\"").replace("\\\\", "\\")) } else { raw.into() };
            Ok((FieldValue::Str(value), i + 1))
        }
        Some(_) => {
            let end = scan(b, start, b", ");
            let text = &s[start..end];
            let value = match text {
                "t" | "T" | "true" | "True" | "TRUE" => FieldValue::Bool(true),
                "f" | "F" | "false" | "False" | "FALSE" => FieldValue::Bool(false),
                _ => {
                    if let Some(i) = text.strip_suffix('i') {
                        FieldValue::Int(i.parse().map_err(|_| SyntaxError("invalid integer field value"))?)
                    } else if let Some(u) = text.strip_suffix('u') {
                        FieldValue::UInt(u.parse().map_err(|_| SyntaxError("invalid unsigned field value"))?)
                    } else {
                        let first = text.as_bytes().first().copied().unwrap_or(b' ');
                        // Rust also parses "inf" and "NaN"; line protocol has no such floats.
                        if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.')
                            || text.bytes().any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E')
                        {
                            return Err(SyntaxError("invalid field value"));
                        }
                        FieldValue::Float(text.parse().map_err(|_| SyntaxError("invalid float field value"))?)
                    }
                }
            };
            Ok((value, end))
        }
    }
}

/// Appends `text` escaped for a measurement (`,`, ` ` and `\`).
pub fn push_measurement(out: &mut String, text: &str) {
    push_escaped(out, text, &[',', ' ']);
}

/// Appends `text` escaped for a tag key, tag value or field key (`,`, `=`, ` ` and `\`).
pub fn push_tag(out: &mut String, text: &str) {
    push_escaped(out, text, &[',', '=', ' ']);
}

/// A backslash is escaped too (`\\`, which the parser reads as one): unescaped, a name
/// ending in `\` would escape the separator after it and swallow the rest of the line.
fn push_escaped(out: &mut String, text: &str, special: &[char]) {
    if !text.contains(|c| special.contains(&c) || c == '\\') {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        if special.contains(&c) || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Appends a float field value that reads back as the same f64 (shortest round-trip form;
/// a whole number is written without a decimal point, which line protocol reads as a float).
pub fn push_float(out: &mut String, v: f64) {
    let _ = write!(out, "{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<LineBuf<'_>, SyntaxError> {
        let mut buf = LineBuf::default();
        parse_line(line, &mut buf)?;
        Ok(buf)
    }

    #[test]
    fn a_telegraf_line_parses_into_measurement_tags_fields_and_time() {
        let l = parse("cpu,host=server01,region=us-west usage_idle=98.5,usage_user=1i,ok=true 1700000000000000000")
            .unwrap();
        assert_eq!(l.measurement, "cpu");
        assert_eq!(l.tag("host"), Some("server01"));
        assert_eq!(l.tag("region"), Some("us-west"));
        assert_eq!(
            l.fields,
            vec![
                ("usage_idle".into(), FieldValue::Float(98.5)),
                ("usage_user".into(), FieldValue::Int(1)),
                ("ok".into(), FieldValue::Bool(true)),
            ]
        );
        assert_eq!(l.timestamp, Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn escapes_are_undone_in_names_tags_and_strings() {
        let l = parse(r#"my\ meas\,x,ta\=g=v\ 1 f\ k="say \"hi\" \\ ok",n=-1.5e2,u=3u"#).unwrap();
        assert_eq!(l.measurement, "my meas,x");
        assert_eq!(l.tags, vec![("ta=g".into(), "v 1".into())]);
        assert_eq!(l.fields[0], ("f k".into(), FieldValue::Str(r#"say "hi" \ ok"#.into())));
        assert_eq!(l.fields[1].1, FieldValue::Float(-150.0));
        assert_eq!(l.fields[2].1, FieldValue::UInt(3));
        assert_eq!(l.timestamp, None);
    }

    #[test]
    fn a_string_field_may_hold_spaces_commas_and_equals() {
        let l = parse(r#"m s="a, b=c d",v=1 5"#).unwrap();
        assert_eq!(l.fields[0].1, FieldValue::Str("a, b=c d".into()));
        assert_eq!(l.fields[1].1, FieldValue::Float(1.0));
        assert_eq!(l.timestamp, Some(5));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let mut buf = LineBuf::default();
        assert_eq!(parse_line("# a comment", &mut buf), Ok(false));
        assert_eq!(parse_line("   ", &mut buf), Ok(false));
        assert_eq!(parse_line("m v=1\r", &mut buf), Ok(true));
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let err = |l: &str| parse(l).unwrap_err().0;
        assert_eq!(err("m"), "missing fields");
        assert_eq!(err("m,t v=1"), "tag without '='");
        assert_eq!(err("m,t= v=1"), "empty tag value");
        assert_eq!(err("m v"), "field without '='");
        assert_eq!(err("m v="), "empty field value");
        assert_eq!(err("m v=abc"), "invalid field value");
        assert_eq!(err("m v=NaN"), "invalid field value");
        assert_eq!(err("m v=inf"), "invalid field value");
        assert_eq!(err("m v=1x"), "invalid field value");
        assert_eq!(err("m v=12.5i"), "invalid integer field value");
        assert_eq!(err(r#"m v="open"#), "unterminated string field");
        assert_eq!(err("m v=1 12:00"), "timestamp is not an integer");
        assert_eq!(err(",t=1 v=1"), "missing measurement");
        assert_eq!(err(r#"m v="a"x"#), "unexpected character after a field value");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap fuzz: every prefix of tricky lines.
        let lines = [r#"a\,b\ c,t\=x=y\\ f="q\"\\",g=1i,h=-2.5e-3,i=tRuE 123"#, "m,\\", "m v=\"\\", "\\"];
        for l in lines {
            for end in 0..=l.len() {
                if let Some(prefix) = l.get(..end) {
                    let _ = parse(prefix);
                }
            }
        }
    }

    #[test]
    fn precisions_convert_to_milliseconds_truncating_towards_the_past() {
        assert_eq!(
            Precision::parse("ns").and_then(|p| p.to_millis(1_700_000_000_123_456_789)),
            Some(1_700_000_000_123)
        );
        assert_eq!(Precision::Nanoseconds.to_millis(-1), Some(-1));
        assert_eq!(Precision::Microseconds.to_millis(1_500), Some(1));
        assert_eq!(Precision::Seconds.to_millis(2), Some(2_000));
        assert_eq!(Precision::Seconds.to_millis(i64::MAX), None);
        assert_eq!(Precision::parse("h"), None);
    }

    #[test]
    fn written_lines_parse_back_to_the_same_names_and_values() {
        let mut out = String::new();
        push_measurement(&mut out, "odd name,x");
        out.push(',');
        push_tag(&mut out, "device");
        out.push('=');
        push_tag(&mut out, "a=b c");
        out.push_str(" value=");
        push_float(&mut out, 0.1 + 0.2);
        out.push_str(" 42");
        let l = parse(&out).unwrap();
        assert_eq!(l.measurement, "odd name,x");
        assert_eq!(l.tag("device"), Some("a=b c"));
        assert_eq!(l.fields[0].1, FieldValue::Float(0.1 + 0.2));
        push_float(&mut out, 1.0);
        assert!(out.ends_with(" 421"));
    }

    #[test]
    fn names_with_backslashes_are_written_so_that_they_parse_back() {
        // Found by the `line_protocol` fuzz target (fuzz/regressions/line_protocol): a tag
        // value ending in a backslash escaped the separator after it.
        for name in ["a\\", "a\\\\", "\\,", "x\\ y", "plain"] {
            let mut out = String::new();
            push_measurement(&mut out, name);
            out.push(',');
            push_tag(&mut out, name);
            out.push('=');
            push_tag(&mut out, name);
            out.push(' ');
            push_tag(&mut out, name);
            out.push_str("=1 5");
            let l = parse(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
            assert_eq!(l.measurement, name, "{out:?}");
            assert_eq!(l.tag(name), Some(name), "{out:?}");
            assert_eq!(l.fields[0].0, name, "{out:?}");
            assert_eq!(l.timestamp, Some(5));
        }
    }
}
