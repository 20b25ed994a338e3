//! Python's view of JSON values, so the agent can print hyperparameters exactly as the AWS
//! toolkit does: `json.loads` each value, then `str()` it for command-line arguments and
//! `json.dumps(sort_keys=True, separators=(",", ":"))` it for `SM_*` variables.
//!
//! serde_json cannot do this: Python keeps integers of any size, accepts `NaN`/`Infinity`,
//! keeps a duplicate key at its first position with its last value, and prints floats with
//! `repr()`'s shortest-digits rules (`1e-05`, `1e+16`, `100.0`).

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    None,
    Bool(bool),
    /// Decimal digits with an optional `-`, exactly as Python prints the int.
    Int(String),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    /// Insertion order, as a Python dict.
    Dict(Vec<(String, Py)>),
}

/// `json.loads(s)`, or `None` where Python would raise (the toolkit then keeps the raw string).
pub fn json_loads(s: &str) -> Option<Py> {
    let mut p = Parser {
        s: s.as_bytes(),
        i: 0,
        src: s,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

/// The toolkit's decoding of one hyperparameter: JSON if it parses, else the string itself.
pub fn decode_hyperparameter(raw: &str) -> Py {
    json_loads(raw).unwrap_or_else(|| Py::Str(raw.to_string()))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.src[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Py> {
        if depth > 500 {
            return None;
        }
        match *self.s.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut items: Vec<(String, Py)> = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Some(Py::Dict(items));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(":") {
                        return None;
                    }
                    self.ws();
                    let v = self.value(depth + 1)?;
                    match items.iter_mut().find(|(ek, _)| *ek == k) {
                        Some(slot) => slot.1 = v,
                        None => items.push((k, v)),
                    }
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("}") {
                        return Some(Py::Dict(items));
                    }
                    return None;
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Some(Py::List(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("]") {
                        return Some(Py::List(items));
                    }
                    return None;
                }
            }
            b'"' => self.string().map(Py::Str),
            _ if self.eat("null") => Some(Py::None),
            _ if self.eat("true") => Some(Py::Bool(true)),
            _ if self.eat("false") => Some(Py::Bool(false)),
            _ if self.eat("NaN") => Some(Py::Float(f64::NAN)),
            _ if self.eat("Infinity") => Some(Py::Float(f64::INFINITY)),
            _ if self.eat("-Infinity") => Some(Py::Float(f64::NEG_INFINITY)),
            _ => self.number(),
        }
    }

    fn number(&mut self) -> Option<Py> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let st = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - st
        };
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        let n = digits(self);
        // JSON integers have no leading zeros ("0" alone is fine).
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            return None;
        }
        let mut is_float = false;
        if self.s.get(self.i) == Some(&b'.')
            && self.s.get(self.i + 1).is_some_and(u8::is_ascii_digit)
        {
            self.i += 1;
            digits(self);
            is_float = true;
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            let save = self.i;
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                self.i = save;
            } else {
                is_float = true;
            }
        }
        let text = &self.src[start..self.i];
        if is_float {
            text.parse::<f64>().ok().map(Py::Float)
        } else {
            let neg = text.starts_with('-');
            let mag = text.trim_start_matches('-').trim_start_matches('0');
            let mag = if mag.is_empty() { "0" } else { mag };
            Some(Py::Int(if neg && mag != "0" {
                format!("-{mag}")
            } else {
                mag.to_string()
            }))
        }
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let c = *self.s.get(self.i)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    let e = *self.s.get(self.i + 1)?;
                    self.i += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi)
                                && self.src[self.i..].starts_with("\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                    out.push(char::from_u32(cp)?);
                                    continue;
                                }
                                self.i = save;
                            }
                            out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                        }
                        _ => return None,
                    }
                }
                // Python's strict decoder refuses raw control characters inside strings.
                0x00..=0x1f => return None,
                _ => {
                    let ch = self.src[self.i..].chars().next()?;
                    out.push(ch);
                    self.i += ch.len_utf8();
                }
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.src.get(self.i..self.i + 4)?;
        let v = u32::from_str_radix(h, 16).ok()?;
        self.i += 4;
        Some(v)
    }
}

/// `float.__repr__`: shortest round-trip digits, fixed notation for 1e-4 <= |x| < 1e16.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // `{:e}` gives the shortest digits that round-trip, e.g. "1.5e-7", "-0e0".
    let sci = format!("{x:e}");
    let (mant, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    let neg = mant.starts_with('-');
    let digits: String = mant
        .trim_start_matches('-')
        .chars()
        .filter(|c| *c != '.')
        .collect();
    let decpt = exp + 1;
    let body = if (-3..=16).contains(&decpt) {
        let n = digits.len() as i32;
        if decpt <= 0 {
            format!("0.{}{}", "0".repeat((-decpt) as usize), digits)
        } else if decpt >= n {
            format!("{}{}.0", digits, "0".repeat((decpt - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..decpt as usize],
                &digits[decpt as usize..]
            )
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let e = decpt - 1;
        let mant = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    };
    if neg { format!("-{body}") } else { body }
}

fn is_printable(c: char) -> bool {
    // Python's str.isprintable: not Cc/Cf/Cs/Co/Cn/Zl/Zp/Zs, except the ASCII space.
    if c == ' ' {
        return true;
    }
    let u = c as u32;
    !(c.is_control()
        || c.is_whitespace()
        || matches!(u, 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
            | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF
            | 0xF0000..=0x10FFFF | 0xE0001 | 0xE0020..=0xE007F))
}

/// `repr(str)`.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x80 && !(' '..='~').contains(&c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) >= 0x80 && !is_printable(c) => {
                let u = c as u32;
                let _ = if u < 0x100 {
                    write!(out, "\\x{u:02x}")
                } else if u < 0x10000 {
                    write!(out, "\\u{u:04x}")
                } else {
                    write!(out, "\\U{u:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

impl Py {
    /// `str(value)`.
    pub fn py_str(&self) -> String {
        match self {
            Py::Str(s) => s.clone(),
            other => other.py_repr(),
        }
    }

    /// `repr(value)`.
    pub fn py_repr(&self) -> String {
        match self {
            Py::None => "None".into(),
            Py::Bool(true) => "True".into(),
            Py::Bool(false) => "False".into(),
            Py::Int(i) => i.clone(),
            Py::Float(f) => float_repr(*f),
            Py::Str(s) => str_repr(s),
            Py::List(items) => format!(
                "[{}]",
                items.iter().map(Py::py_repr).collect::<Vec<_>>().join(", ")
            ),
            Py::Dict(items) => format!(
                "{{{}}}",
                items
                    .iter()
                    .map(|(k, v)| format!("{}: {}", str_repr(k), v.py_repr()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`.
    pub fn json_compact_sorted(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Py::None => out.push_str("null"),
            Py::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Py::Int(i) => out.push_str(i),
            Py::Float(f) if f.is_nan() => out.push_str("NaN"),
            Py::Float(f) if f.is_infinite() => {
                out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Py::Float(f) => out.push_str(&float_repr(*f)),
            Py::Str(s) => json_string(s, out),
            Py::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            Py::Dict(items) => {
                let mut sorted: Vec<&(String, Py)> = items.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(k, out);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Sorted dict items (Python sorts by key for the command line).
    pub fn sorted_items(items: &[(String, Py)]) -> Vec<&(String, Py)> {
        let mut v: Vec<&(String, Py)> = items.iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// A JSON string with everything outside printable ASCII escaped (`ensure_ascii=True`).
pub fn json_string(s: &str, out: &mut String) {
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
            ' '..='~' => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        for (x, s) in [
            (0.01, "0.01"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1000000000000000.0"),
            (-0.0, "-0.0"),
            (2.5e300, "2.5e+300"),
        ] {
            assert_eq!(float_repr(x), s, "{x}");
        }
    }

    #[test]
    fn json_values_print_like_the_toolkit() {
        let v = json_loads(r#"[1, "a's", null, true, 1e-5, {"z": 1, "a": "é"}]"#).unwrap();
        assert_eq!(
            v.py_str(),
            r#"[1, "a's", None, True, 1e-05, {'z': 1, 'a': 'é'}]"#
        );
        assert_eq!(
            v.json_compact_sorted(),
            r#"[1,"a's",null,true,1e-05,{"a":"\u00e9","z":1}]"#
        );
        assert_eq!(
            json_loads("1000000000000000000000000000000")
                .unwrap()
                .py_str(),
            "1000000000000000000000000000000"
        );
        assert_eq!(
            json_loads(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap().py_str(),
            "{'a': 3, 'b': 2}"
        );
        assert_eq!(decode_hyperparameter("sgd"), Py::Str("sgd".into()));
        assert_eq!(json_loads(" 7 ").unwrap(), Py::Int("7".into()));
        assert!(json_loads("01").is_none());
        assert_eq!(json_loads("-0").unwrap(), Py::Int("0".into()));
    }
}
