//! JSON read and written the way the reference encoder's Python does it.
//!
//! Tool schemas, non-string tool-call arguments and response formats are printed with
//! `json.dumps(obj, ensure_ascii=False)`: `", "` / `": "` separators, keys in input order, raw non-ASCII,
//! lowercase `\u00XX` escapes and Python's float repr. Tool-call arguments arrive as JSON text and are
//! read with `json.loads` semantics (big integers stay exact, the last duplicate key wins in the first
//! key's slot, `NaN`/`Infinity` are accepted), so they get their own value type instead of
//! `serde_json::Value`.

use serde_json::Value;

/// A JSON value as Python's `json.loads` would hold it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyValue {
    Null,
    Bool(bool),
    /// Decimal digits of an integer, exact.
    Int(String),
    Float(f64),
    Str(String),
    Array(Vec<PyValue>),
    Object(Vec<(String, PyValue)>),
}

/// Parses JSON text with `json.loads` rules; `None` where Python would raise.
pub(crate) fn loads(text: &str) -> Option<PyValue> {
    let mut p = Reader { s: text.as_bytes(), i: 0, depth: 0 };
    p.ws();
    let v = p.value()?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 512;

impl Reader<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<PyValue> {
        match *self.s.get(self.i)? {
            b'{' => self.nested(Self::object),
            b'[' => self.nested(Self::array),
            b'"' => self.string().map(PyValue::Str),
            b'n' if self.eat("null") => Some(PyValue::Null),
            b't' if self.eat("true") => Some(PyValue::Bool(true)),
            b'f' if self.eat("false") => Some(PyValue::Bool(false)),
            b'N' if self.eat("NaN") => Some(PyValue::Float(f64::NAN)),
            b'I' if self.eat("Infinity") => Some(PyValue::Float(f64::INFINITY)),
            b'-' if self.eat("-Infinity") => Some(PyValue::Float(f64::NEG_INFINITY)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Option<PyValue>) -> Option<PyValue> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> Option<PyValue> {
        self.i += 1;
        let mut items: Vec<(String, PyValue)> = Vec::new();
        self.ws();
        if self.eat("}") {
            return Some(PyValue::Object(items));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return None;
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(":") {
                return None;
            }
            self.ws();
            let val = self.value()?;
            match items.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = val,
                None => items.push((key, val)),
            }
            self.ws();
            if self.eat("}") {
                return Some(PyValue::Object(items));
            }
            if !self.eat(",") {
                return None;
            }
        }
    }

    fn array(&mut self) -> Option<PyValue> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat("]") {
            return Some(PyValue::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            if self.eat("]") {
                return Some(PyValue::Array(items));
            }
            if !self.eat(",") {
                return None;
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<PyValue> {
        let start = self.i;
        self.eat("-");
        let int_start = self.i;
        if self.eat("0") {
            // A leading zero stands alone; following digits are "extra data" for Python.
        } else if self.digits() == 0 {
            return None;
        }
        let int_end = self.i;
        let mut is_float = false;
        let mark = self.i;
        if self.eat(".") {
            if self.digits() == 0 {
                self.i = mark;
            } else {
                is_float = true;
            }
        }
        let mark = self.i;
        if self.eat("e") || self.eat("E") {
            if !self.eat("+") {
                self.eat("-");
            }
            if self.digits() == 0 {
                self.i = mark;
            } else {
                is_float = true;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if is_float {
            return text.parse::<f64>().ok().map(PyValue::Float);
        }
        let digits = std::str::from_utf8(&self.s[int_start..int_end]).ok()?;
        let negative = start != int_start && digits != "0";
        Some(PyValue::Int(if negative { format!("-{digits}") } else { digits.to_string() }))
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        let v = u32::from_str_radix(h, 16).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i)?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return None,
                _ => out.push(b),
            }
        }
    }

    /// `\uXXXX`, joining surrogate pairs; a lone surrogate (which Rust strings cannot hold) becomes U+FFFD.
    fn unicode_escape(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) && self.s[self.i..].starts_with(b"\\u") {
            let save = self.i;
            self.i += 2;
            match self.hex4() {
                Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                    return char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
                }
                _ => self.i = save,
            }
        }
        Some(char::from_u32(hi).unwrap_or('\u{FFFD}'))
    }
}

/// `json.dumps(s, ensure_ascii=False)` for a string.
pub(crate) fn dump_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    dump_str(s, &mut out);
    out
}

/// Python's `repr(float)` as `json.dumps` writes it.
pub(crate) fn dump_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let n = digits.len() as i32;
    let decpt = exp + 1;
    if f < 0.0 {
        out.push('-');
    }
    if decpt > -4 && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        out.push_str(&format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()));
    }
}

pub(crate) fn dump_py(v: &PyValue, out: &mut String) {
    match v {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        PyValue::Int(d) => out.push_str(d),
        PyValue::Float(f) => dump_float(*f, out),
        PyValue::Str(s) => dump_str(s, out),
        PyValue::Array(items) => dump_array(items, out, dump_py),
        PyValue::Object(items) => dump_object(items.iter().map(|(k, v)| (k.as_str(), v)), out, dump_py),
    }
}

/// `[a, b]` with Python's separators.
fn dump_array<T>(items: &[T], out: &mut String, item: fn(&T, &mut String)) {
    out.push('[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(v, out);
    }
    out.push(']');
}

/// `{"k": v}` with Python's separators, keys in the given order.
fn dump_object<'a, T: 'a>(
    entries: impl Iterator<Item = (&'a str, &'a T)>,
    out: &mut String,
    item: fn(&T, &mut String),
) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        dump_str(k, out);
        out.push_str(": ");
        item(v, out);
    }
    out.push('}');
}

/// `json.dumps(v, ensure_ascii=False)` for a `serde_json::Value` (keys in their stored order).
pub(crate) fn dump_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                out.push_str(&n.to_string());
            } else if let Some(f) = n.as_f64() {
                dump_float(f, out);
            }
        }
        Value::String(s) => dump_str(s, out),
        Value::Array(items) => dump_array(items, out, dump_value),
        Value::Object(map) => dump_object(map.iter().map(|(k, v)| (k.as_str(), v)), out, dump_value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(f: f64) -> String {
        let mut s = String::new();
        dump_float(f, &mut s);
        s
    }

    fn roundtrip(text: &str) -> String {
        let mut s = String::new();
        dump_py(&loads(text).expect("valid json"), &mut s);
        s
    }

    #[test]
    fn floats_follow_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (2.5, "2.5"),
            (1e-7, "1e-07"),
            (1e21, "1e+21"),
            (-0.0, "-0.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (123456.789, "123456.789"),
            (1.5e300, "1.5e+300"),
            (-3.25e-10, "-3.25e-10"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "Infinity"),
        ];
        for (f, want) in cases {
            assert_eq!(float(f), want, "{f:e}");
        }
    }

    #[test]
    fn loads_matches_python() {
        assert_eq!(roundtrip(r#"{"a":1,"b":[1.0,-0,2.50,1E21]}"#), r#"{"a": 1, "b": [1.0, 0, 2.5, 1e+21]}"#);
        assert_eq!(roundtrip("12345678901234567890123"), "12345678901234567890123");
        assert_eq!(roundtrip(r#"{"a":1,"b":2,"a":3}"#), r#"{"a": 3, "b": 2}"#);
        assert_eq!(roundtrip(r#""\ud83d\ude00 \u00e9 \u0007 /""#), "\"😀 é \\u0007 /\"");
        assert_eq!(roundtrip(" [NaN, -Infinity] "), "[NaN, -Infinity]");
        for bad in ["", "01", "[1,]", "{\"a\" 1}", "\"a\tb\"", "1.", "tru", "[1] x", "{'a': 1}"] {
            assert!(loads(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert!(loads(&deep).is_none());
    }
}
