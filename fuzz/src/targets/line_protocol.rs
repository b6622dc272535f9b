//! InfluxDB line protocol (`ingest::codec::line_protocol`): the body of every
//! `/api/v2/write`, from any Telegraf or client library.
//!
//! The input is a body; each line is parsed as the line-protocol source does. A line that
//! parses is written back with the codec's own writers (`push_measurement`, `push_tag`,
//! `push_float`, as the InfluxDB sink writes) and must parse to the same measurement, tags,
//! fields and timestamp: the escaping of the writer and the parser agree. A number
//! written with an `i` or `u` suffix is an integer of that kind; a float is finite or came
//! from a literal that overflows (`1e999`), which validation refuses later.

use ingest::codec::line_protocol::{FieldValue, LineBuf, parse_line, push_float, push_measurement, push_tag};

/// Parses every line of `data` and checks the ones that parse.
pub fn run(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let mut buf = LineBuf::default();
    for line in body.split('\n') {
        if parse_line(line, &mut buf) != Ok(true) {
            continue;
        }
        assert!(!buf.measurement.is_empty() && !buf.fields.is_empty(), "a parsed line without measurement or fields");
        let Some(written) = write(&buf) else { continue };
        let mut again = LineBuf::default();
        match parse_line(&written, &mut again) {
            Ok(true) => {}
            other => panic!("line {line:?} parsed, was written as {written:?}, which gives {other:?}"),
        }
        assert_eq!(again.measurement, buf.measurement, "measurement of {line:?} written as {written:?}");
        assert_eq!(again.tags, buf.tags, "tags of {line:?} written as {written:?}");
        assert_eq!(again.fields, buf.fields, "fields of {line:?} written as {written:?}");
        assert_eq!(again.timestamp, buf.timestamp, "timestamp of {line:?} written as {written:?}");
    }
}

/// The line written back; `None` when a field is a non-finite float, which line protocol
/// cannot spell (the parser takes `1e999` as infinity; validation refuses it).
fn write(line: &LineBuf<'_>) -> Option<String> {
    let mut out = String::new();
    push_measurement(&mut out, &line.measurement);
    for (k, v) in &line.tags {
        out.push(',');
        push_tag(&mut out, k);
        out.push('=');
        push_tag(&mut out, v);
    }
    for (i, (k, v)) in line.fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        push_tag(&mut out, k);
        out.push('=');
        match v {
            FieldValue::Float(f) if !f.is_finite() => return None,
            FieldValue::Float(f) => push_float(&mut out, *f),
            FieldValue::Int(n) => out.push_str(&format!("{n}i")),
            FieldValue::UInt(n) => out.push_str(&format!("{n}u")),
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldValue::Str(s) => push_string(&mut out, s),
        }
    }
    if let Some(ts) = line.timestamp {
        out.push_str(&format!(" {ts}"));
    }
    Some(out)
}

/// A string field value as InfluxDB spells it: quoted, `"` and `\` escaped.
fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}
