//! `DataProcessing`: the JSONPath subset SageMaker documents for `InputFilter` and
//! `OutputFilter`, and `JoinSource`. A CSV record is seen as a JSON array of its fields (so
//! only index filters apply to it) and written back as CSV; JSON records as themselves.
//!
//! The operators: `$` (the record), `.name` and `['name']` (a child), `['a','b']` (several
//! children, as an object of them), `[i]` (an element; negative counts from the end),
//! `[i,j]` and `[i,start:]` (several, in order), `[start:end]` (a slice; either end may be left
//! out), `*` and `[*]`
//! (every child).

use serde_json::{Map, Value};

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum IndexPart {
    At(i64),
    Range(Option<i64>, Option<i64>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Name(String),
    Names(Vec<String>),
    Index(i64),
    /// Several indexes and slices, in order (`[0,5:]`).
    Indexes(Vec<IndexPart>),
    Slice(Option<i64>, Option<i64>),
    Wildcard,
}

impl Step {
    /// Whether the step selects several values (what follows applies to each of them).
    fn is_multi(&self) -> bool {
        matches!(
            self,
            Step::Indexes(_) | Step::Slice(..) | Step::Wildcard | Step::Names(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path:?} is not a JSONPath expression SageMaker supports ({why}); use $, .name, ['name','name'], [index], [index,index], [start:end] or *"
)]
pub struct BadPath {
    pub path: String,
    pub why: String,
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<Self, BadPath> {
        let bad = |why: &str| BadPath {
            path: text.to_string(),
            why: why.to_string(),
        };
        let t = text.trim();
        let mut rest = t
            .strip_prefix('$')
            .ok_or_else(|| bad("it must start with $"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                if let Some(r2) = r.strip_prefix('*') {
                    steps.push(Step::Wildcard);
                    rest = r2;
                    continue;
                }
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let name = &r[..end];
                if name.is_empty() {
                    return Err(bad("a '.' must be followed by a name"));
                }
                steps.push(Step::Name(name.to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = closing_bracket(r).ok_or_else(|| bad("a '[' is not closed"))?;
                steps.push(parse_bracket(&r[..end]).map_err(|w| bad(&w))?);
                rest = &r[end + 1..];
            } else {
                return Err(bad("expected '.' or '['"));
            }
        }
        Ok(JsonPath {
            text: t.to_string(),
            steps,
        })
    }

    /// `$` alone: the record unchanged.
    pub fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What the filter selects of `value`; `None` when it matches nothing.
    pub fn select(&self, value: &Value) -> Option<Value> {
        apply(&self.steps, value)
    }
}

/// The index of the `]` closing a bracket, quotes respected.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    let inner = inner.trim();
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if inner.starts_with('\'') || inner.starts_with('"') {
        let mut names = Vec::new();
        for part in split_top(inner) {
            let p = part.trim();
            let q = p.chars().next().unwrap_or('\'');
            let name = p
                .strip_prefix(q)
                .and_then(|x| x.strip_suffix(q))
                .ok_or_else(|| format!("{p} is not a quoted name"))?;
            names.push(name.to_string());
        }
        return Ok(match names.len() {
            1 => Step::Name(names.remove(0)),
            _ => Step::Names(names),
        });
    }
    let num = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| format!("{s} is not an index"))
    };
    let mut parts = Vec::new();
    for part in inner.split(',') {
        parts.push(match part.split_once(':') {
            Some((a, b)) => IndexPart::Range(num(a)?, num(b)?),
            None => IndexPart::At(num(part)?.ok_or("an index is missing")?),
        });
    }
    Ok(match parts[..] {
        [IndexPart::At(i)] => Step::Index(i),
        [IndexPart::Range(a, b)] => Step::Slice(a, b),
        _ => Step::Indexes(parts),
    })
}

/// Splits `'a','b'` at the commas outside quotes.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quote, mut start) = (None, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, ',') => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn resolve(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let r = if i < 0 { len + i } else { i };
    (0..len).contains(&r).then_some(r as usize)
}

/// `a[start:end]` with Python's meaning of negative and missing ends.
fn slice(a: &[Value], start: Option<i64>, end: Option<i64>) -> &[Value] {
    let len = a.len() as i64;
    let clamp = |v: i64| (if v < 0 { len + v } else { v }).clamp(0, len) as usize;
    let (s, e) = (start.map_or(0, clamp), end.map_or(a.len(), clamp));
    if s >= e { &[] } else { &a[s..e] }
}

fn apply(steps: &[Step], value: &Value) -> Option<Value> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(value.clone());
    };
    let selected: Vec<Value> = match (step, value) {
        (Step::Name(n), Value::Object(m)) => return apply(rest, m.get(n)?),
        (Step::Index(i), Value::Array(a)) => return apply(rest, &a[resolve(*i, a.len())?]),
        (Step::Names(names), Value::Object(m)) => {
            // Several names select an object of those members (SageMaker's
            // `$['id','SageMakerOutput']`).
            let mut out = Map::new();
            for n in names {
                if let Some(v) = m.get(n).and_then(|v| apply(rest, v)) {
                    out.insert(n.clone(), v);
                }
            }
            return (!out.is_empty()).then_some(Value::Object(out));
        }
        (Step::Indexes(parts), Value::Array(a)) => parts
            .iter()
            .flat_map(|p| match *p {
                IndexPart::At(i) => resolve(i, a.len()).map(|i| &a[i..=i]).unwrap_or(&[]),
                IndexPart::Range(s, e) => slice(a, s, e),
            })
            .cloned()
            .collect(),
        (Step::Slice(s, e), Value::Array(a)) => {
            let part = slice(a, *s, *e);
            if part.is_empty() {
                return None;
            }
            part.to_vec()
        }
        (Step::Wildcard, Value::Array(a)) => a.clone(),
        (Step::Wildcard, Value::Object(m)) => m.values().cloned().collect(),
        _ => return None,
    };
    debug_assert!(step.is_multi());
    let out: Vec<Value> = selected.iter().filter_map(|v| apply(rest, v)).collect();
    (!out.is_empty()).then_some(Value::Array(out))
}

/// How a record's bytes are read and written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A row of comma-separated fields.
    Csv,
    /// A JSON document (a JSON Lines line).
    Json,
}

impl Format {
    /// From a content type (`text/csv`, `application/json`, `application/jsonlines`);
    /// `None` for anything else.
    pub fn of(content_type: &str) -> Option<Self> {
        let ct = content_type.to_ascii_lowercase();
        if ct.contains("csv") {
            Some(Format::Csv)
        } else if ct.contains("json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    /// A model's answer for one record: JSON when it parses as JSON, else CSV.
    pub fn guess(data: &[u8]) -> Self {
        match serde_json::from_slice::<Value>(data) {
            Ok(Value::Array(_) | Value::Object(_)) => Format::Json,
            _ => Format::Csv,
        }
    }
}

/// The fields of a CSV row, each as it was written (quotes kept, so a row writes back
/// byte for byte).
fn csv_fields(row: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(row);
    let mut out = Vec::new();
    let (mut in_quotes, mut start) = (false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                out.push(Value::String(text[start..i].to_string()));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(Value::String(text[start..].to_string()));
    out
}

fn csv_field(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(_) | Value::Object(_) => {
            let s = v.to_string();
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        other => other.to_string(),
    }
}

/// A record as a value: a CSV row becomes the array of its fields.
pub fn parse(data: &[u8], format: Format) -> Result<Value, String> {
    match format {
        Format::Csv => Ok(Value::Array(csv_fields(data))),
        Format::Json => {
            serde_json::from_slice(data).map_err(|e| format!("the record is not valid JSON: {e}"))
        }
    }
}

/// A value written back as a record.
pub fn write(value: &Value, format: Format) -> Vec<u8> {
    match (format, value) {
        (Format::Csv, Value::Array(fields)) => fields
            .iter()
            .map(|f| match f {
                // A nested row (a model's answer of several numbers) is flattened into it.
                Value::Array(inner) => inner.iter().map(csv_field).collect::<Vec<_>>().join(","),
                f => csv_field(f),
            })
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes(),
        (Format::Csv, v) => csv_field(v).into_bytes(),
        (Format::Json, v) => v.to_string().into_bytes(),
    }
}

/// A CSV field that is a number becomes one when the record is written as JSON.
fn typed(v: Value) -> Value {
    match v {
        Value::String(s) => match serde_json::from_str::<serde_json::Number>(s.trim()) {
            Ok(n) => Value::Number(n),
            Err(_) => Value::String(s),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(typed).collect()),
        other => other,
    }
}

/// `JoinSource: Input`: the input record with the model's answer for it. A JSON object gets
/// the answer under `SageMakerOutput`; an array (a CSV row) gets its elements appended.
pub fn join(input: Value, input_format: Format, output: Value, output_format: Format) -> Value {
    let output = if input_format == Format::Json && output_format == Format::Csv {
        typed(output)
    } else {
        output
    };
    match input {
        Value::Object(mut m) => {
            m.insert("SageMakerOutput".into(), output);
            Value::Object(m)
        }
        Value::Array(mut a) => {
            match output {
                Value::Array(o) => a.extend(o),
                o => a.push(o),
            }
            Value::Array(a)
        }
        other => Value::Array(vec![other, output]),
    }
}

/// The format a joined record is written in: CSV only when both sides are CSV.
pub fn joined_format(input: Format, output: Format) -> Format {
    if input == Format::Csv && output == Format::Csv {
        Format::Csv
    } else {
        Format::Json
    }
}

/// A joined value written as JSON from a CSV input: its number fields become numbers.
pub fn for_format(value: Value, format: Format) -> Value {
    match format {
        Format::Json => typed(value),
        Format::Csv => value,
    }
}

/// The model's answer to a batch of `n` records, one piece per record: the elements of a JSON
/// array of `n`, or `n` lines. `Err` says what came back instead.
pub fn split_answer(body: &[u8], n: usize) -> Result<Vec<Vec<u8>>, String> {
    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body)
        && items.len() == n
    {
        return Ok(items.iter().map(|v| v.to_string().into_bytes()).collect());
    }
    let text = body.strip_suffix(b"\n").unwrap_or(body);
    let lines: Vec<Vec<u8>> = text
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect();
    if lines.len() == n {
        return Ok(lines);
    }
    if n == 1 {
        return Ok(vec![text.to_vec()]);
    }
    Err(format!(
        "the model answered {} lines for a batch of {n} records, and not a JSON array of {n}; join and output filters need one answer per record: return one line (or one array element) per record from output_fn, or use BatchStrategy SingleRecord",
        lines.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(path: &str, v: Value) -> Option<Value> {
        JsonPath::parse(path).unwrap().select(&v)
    }

    #[test]
    fn the_documented_operators() {
        let rec = json!({"id": 7, "features": [1, 2, 3, 4], "meta": {"a": {"b": 5}}});
        assert_eq!(sel("$", rec.clone()), Some(rec.clone()));
        assert!(JsonPath::parse("$").unwrap().is_identity());
        assert_eq!(sel("$.features", rec.clone()), Some(json!([1, 2, 3, 4])));
        assert_eq!(sel("$['features']", rec.clone()), Some(json!([1, 2, 3, 4])));
        assert_eq!(sel("$.meta.a.b", rec.clone()), Some(json!(5)));
        assert_eq!(sel("$.features[0]", rec.clone()), Some(json!(1)));
        assert_eq!(sel("$.features[-1]", rec.clone()), Some(json!(4)));
        assert_eq!(sel("$.features[1:3]", rec.clone()), Some(json!([2, 3])));
        assert_eq!(sel("$.features[2:]", rec.clone()), Some(json!([3, 4])));
        assert_eq!(sel("$.features[:1]", rec.clone()), Some(json!([1])));
        assert_eq!(sel("$.features[-2:]", rec.clone()), Some(json!([3, 4])));
        assert_eq!(sel("$.features[0,3]", rec.clone()), Some(json!([1, 4])));
        assert_eq!(sel("$.features[0,2:]", rec.clone()), Some(json!([1, 3, 4])));
        assert_eq!(sel("$.features[-1,:1]", rec.clone()), Some(json!([4, 1])));
        assert_eq!(sel("$.features[*]", rec.clone()), Some(json!([1, 2, 3, 4])));
        assert_eq!(
            sel("$['id','meta']['a']", rec.clone()),
            Some(json!({"meta": {"b": 5}}))
        );
        assert_eq!(
            sel("$['id','features']", rec.clone()),
            Some(json!({"id": 7, "features": [1, 2, 3, 4]}))
        );
        assert_eq!(sel("$.*", json!({"a": 1, "b": 2})), Some(json!([1, 2])));
        assert_eq!(
            sel("$[*].x", json!([{"x": 1}, {"y": 2}, {"x": 3}])),
            Some(json!([1, 3]))
        );
    }

    #[test]
    fn a_filter_that_matches_nothing_says_so() {
        let rec = json!({"id": 7, "features": [1, 2]});
        assert_eq!(sel("$.missing", rec.clone()), None);
        assert_eq!(sel("$.features[5]", rec.clone()), None);
        assert_eq!(sel("$.features[3:]", rec.clone()), None);
        assert_eq!(sel("$[0]", rec.clone()), None);
        assert_eq!(sel("$.id.x", rec), None);
    }

    #[test]
    fn bad_paths_are_refused_with_the_operators_that_work() {
        for p in ["features", "$.", "$[1", "$[a]", "$..x", "$[1:x]", "$[1,]"] {
            let e = JsonPath::parse(p).unwrap_err();
            assert!(e.to_string().contains("use $, .name"), "{p}: {e}");
        }
    }

    #[test]
    fn csv_rows_filter_by_index_and_write_back_exactly() {
        let row = parse(b"id-1,\"a,b\",0.50,3", Format::Csv).unwrap();
        assert_eq!(row, json!(["id-1", "\"a,b\"", "0.50", "3"]));
        let features = sel("$[2:]", row.clone()).unwrap();
        assert_eq!(write(&features, Format::Csv), b"0.50,3");
        assert_eq!(
            write(&sel("$[0]", row.clone()).unwrap(), Format::Csv),
            b"id-1"
        );
        assert_eq!(write(&row, Format::Csv), b"id-1,\"a,b\",0.50,3");
    }

    #[test]
    fn join_csv_with_csv_appends_the_answer() {
        let input = parse(b"id-1,5,6", Format::Csv).unwrap();
        let output = parse(b"0.25,0.75", Format::Csv).unwrap();
        let joined = join(input, Format::Csv, output, Format::Csv);
        let f = joined_format(Format::Csv, Format::Csv);
        assert_eq!(write(&joined, f), b"id-1,5,6,0.25,0.75");
        let kept = sel("$[0,-1]", joined).unwrap();
        assert_eq!(write(&kept, f), b"id-1,0.75");
    }

    #[test]
    fn join_json_object_puts_the_answer_under_sagemaker_output() {
        let input = parse(br#"{"id":1,"features":[1,2]}"#, Format::Json).unwrap();
        let output = parse(b"[0.1,0.9]", Format::Json).unwrap();
        let joined = join(input, Format::Json, output, Format::Json);
        assert_eq!(
            joined,
            json!({"id": 1, "features": [1, 2], "SageMakerOutput": [0.1, 0.9]})
        );
        let kept = sel("$['id','SageMakerOutput']", joined).unwrap();
        assert_eq!(
            write(&kept, Format::Json),
            br#"{"id":1,"SageMakerOutput":[0.1,0.9]}"#
        );
        // A CSV answer joined to JSON input: its numbers are numbers.
        let input = parse(br#"{"id":2}"#, Format::Json).unwrap();
        let joined = join(
            input,
            Format::Json,
            parse(b"0.5,x", Format::Csv).unwrap(),
            Format::Csv,
        );
        assert_eq!(joined, json!({"id": 2, "SageMakerOutput": [0.5, "x"]}));
        // CSV input with a JSON answer: the row (numbers typed) with the answer appended.
        let row = parse(b"a,1", Format::Csv).unwrap();
        let joined = join(row, Format::Csv, json!([0.3]), Format::Json);
        let f = joined_format(Format::Csv, Format::Json);
        assert_eq!(write(&for_format(joined, f), f), br#"["a",1,0.3]"#);
    }

    #[test]
    fn answers_split_per_record() {
        assert_eq!(
            split_answer(b"[[1,2],[3,4]]", 2).unwrap(),
            vec![b"[1,2]".to_vec(), b"[3,4]".to_vec()]
        );
        assert_eq!(
            split_answer(b"1\r\n2\n", 2).unwrap(),
            vec![b"1".to_vec(), b"2".to_vec()]
        );
        assert_eq!(
            split_answer(b"[[1,2]]", 1).unwrap(),
            vec![b"[1,2]".to_vec()]
        );
        assert_eq!(split_answer(b"a\nb\n", 1).unwrap(), vec![b"a\nb".to_vec()]);
        let e = split_answer(b"1\n2\n3\n", 2).unwrap_err();
        assert!(
            e.starts_with("the model answered 3 lines for a batch of 2 records"),
            "{e}"
        );
    }

    #[test]
    fn formats_from_content_types() {
        assert_eq!(Format::of("text/csv"), Some(Format::Csv));
        assert_eq!(Format::of("application/jsonlines"), Some(Format::Json));
        assert_eq!(Format::of("application/x-npy"), None);
        assert_eq!(Format::guess(b"[1,2]"), Format::Json);
        assert_eq!(Format::guess(b"1,2"), Format::Csv);
    }
}
