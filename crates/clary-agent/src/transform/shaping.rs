//! What happens to records around the model: `InputFilter` before a record is sent, and for
//! the answers `JoinSource`, `OutputFilter` and `AssembleWith`. Pure: bytes in, bytes out.

use super::filter::{self, BadPath, Format, JsonPath};
use super::records::Position;

/// A transform job's `DataProcessing` and `AssembleWith`, ready to apply.
#[derive(Debug, Clone)]
pub struct Shaping {
    input_filter: Option<JsonPath>,
    output_filter: Option<JsonPath>,
    join: bool,
    /// From `ContentType`; guessed per record when it names neither CSV nor JSON.
    input_format: Option<Format>,
    /// From `Accept`; guessed per answer otherwise.
    output_format: Option<Format>,
    lines: bool,
}

/// The parts of a job that shape records.
pub struct ShapingSpec<'a> {
    pub input_filter: Option<&'a str>,
    pub output_filter: Option<&'a str>,
    pub join_input: bool,
    pub content_type: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub assemble_lines: bool,
}

fn path(p: Option<&str>) -> Result<Option<JsonPath>, BadPath> {
    Ok(match p {
        Some(p) => Some(JsonPath::parse(p)?).filter(|p| !p.is_identity()),
        None => None,
    })
}

impl Shaping {
    pub fn new(spec: &ShapingSpec<'_>) -> Result<Self, BadPath> {
        Ok(Shaping {
            input_filter: path(spec.input_filter)?,
            output_filter: path(spec.output_filter)?,
            join: spec.join_input,
            input_format: spec.content_type.and_then(Format::of),
            output_format: spec.accept.and_then(Format::of),
            lines: spec.assemble_lines,
        })
    }

    /// The answers must be split per record (join, an output filter).
    pub fn per_record(&self) -> bool {
        self.join || self.output_filter.is_some()
    }

    /// The original input records are needed once the answer comes back (join).
    pub fn keeps_inputs(&self) -> bool {
        self.join
    }

    fn input_format_of(&self, data: &[u8]) -> Format {
        self.input_format.unwrap_or_else(|| Format::guess(data))
    }

    /// What is sent for a record: the record itself, or what `InputFilter` selects of it.
    pub fn input(&self, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let Some(f) = &self.input_filter else {
            return Ok(data);
        };
        let format = self.input_format_of(&data);
        let value = filter::parse(&data, format)?;
        let selected = f.select(&value).ok_or_else(|| {
            format!(
                "InputFilter {} matches nothing in the record; check the filter against the input (a CSV record is an array of its fields: use index filters such as $[1:])",
                f.as_str()
            )
        })?;
        Ok(filter::write(&selected, format))
    }

    /// The output for a batch from the model's answer. `inputs` are the batch's original
    /// records (when [`Shaping::keeps_inputs`]) and `positions` where each starts. `Err`
    /// names the record that could not be shaped.
    pub fn output(
        &self,
        answer: &[u8],
        positions: &[Position],
        inputs: &[Vec<u8>],
    ) -> Result<Vec<u8>, (Option<Position>, String)> {
        if !self.per_record() {
            let mut out = Vec::with_capacity(answer.len() + positions.len());
            if self.lines {
                // One answer per line: split when the answer has one piece per record.
                match filter::split_answer(answer, positions.len()) {
                    Ok(pieces) if positions.len() > 1 => {
                        for p in pieces {
                            out.extend_from_slice(&p);
                            out.push(b'\n');
                        }
                    }
                    _ => {
                        out.extend_from_slice(answer);
                        if !answer.ends_with(b"\n") {
                            out.push(b'\n');
                        }
                    }
                }
            } else {
                out.extend_from_slice(answer);
            }
            return Ok(out);
        }
        let pieces = filter::split_answer(answer, positions.len())
            .map_err(|e| (positions.first().copied(), e))?;
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let at = positions.get(i).copied();
            let out_format = self.output_format.unwrap_or_else(|| Format::guess(piece));
            let answer_value = filter::parse(piece, out_format).map_err(|e| {
                (
                    at,
                    format!("the model's answer could not be read as {out_format:?}: {e}"),
                )
            })?;
            let (value, format) = match inputs.get(i).filter(|_| self.join) {
                Some(input) => {
                    let in_format = self.input_format_of(input);
                    let input_value = filter::parse(input, in_format).map_err(|e| (at, e))?;
                    let format = filter::joined_format(in_format, out_format);
                    let joined = filter::join(input_value, in_format, answer_value, out_format);
                    (filter::for_format(joined, format), format)
                }
                None => (answer_value, out_format),
            };
            let value = match &self.output_filter {
                Some(f) => f.select(&value).ok_or_else(|| {
                    (
                        at,
                        format!(
                            "OutputFilter {} matches nothing in the {}; check the filter against the model's answer{}",
                            f.as_str(),
                            if self.join { "joined record" } else { "model's answer" },
                            if self.join { " joined to its input (a JSON input record gets the answer under SageMakerOutput)" } else { "" }
                        ),
                    )
                })?,
                None => value,
            };
            out.extend_from_slice(&filter::write(&value, format));
            if self.lines {
                out.push(b'\n');
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaping(
        input_filter: Option<&str>,
        output_filter: Option<&str>,
        join: bool,
        content_type: &str,
        accept: Option<&str>,
    ) -> Shaping {
        Shaping::new(&ShapingSpec {
            input_filter,
            output_filter,
            join_input: join,
            content_type: Some(content_type),
            accept,
            assemble_lines: true,
        })
        .unwrap()
    }

    const AT: [Position; 2] = [Position::Line(1), Position::Line(2)];

    #[test]
    fn without_processing_answers_pass_through() {
        let s = shaping(None, Some("$"), false, "text/csv", None);
        assert!(!s.per_record());
        assert_eq!(s.input(b"a,b".to_vec()).unwrap(), b"a,b");
        // AssembleWith Line: one answer per line.
        assert_eq!(s.output(b"[[1],[2]]", &AT, &[]).unwrap(), b"[1]\n[2]\n");
        assert_eq!(s.output(b"x", &AT[..1], &[]).unwrap(), b"x\n");
        let none = Shaping::new(&ShapingSpec {
            input_filter: None,
            output_filter: None,
            join_input: false,
            content_type: None,
            accept: None,
            assemble_lines: false,
        })
        .unwrap();
        assert_eq!(none.output(b"abc", &AT, &[]).unwrap(), b"abc");
    }

    #[test]
    fn csv_id_column_filtered_out_then_joined_back() {
        // The documented pattern: drop the ID before the model, keep ID and prediction.
        let s = shaping(
            Some("$[1:]"),
            Some("$[0,-1]"),
            true,
            "text/csv",
            Some("text/csv"),
        );
        assert_eq!(s.input(b"id-7,0.5,0.25".to_vec()).unwrap(), b"0.5,0.25");
        let inputs = vec![b"id-7,0.5,0.25".to_vec(), b"id-8,1,2".to_vec()];
        let out = s.output(b"0.9\n0.1\n", &AT, &inputs).unwrap();
        assert_eq!(out, b"id-7,0.9\nid-8,0.1\n");
    }

    #[test]
    fn json_lines_join_under_sagemaker_output() {
        let s = shaping(
            Some("$.features"),
            Some("$['id','SageMakerOutput']"),
            true,
            "application/jsonlines",
            Some("application/json"),
        );
        let rec = br#"{"id":3,"features":[1,2]}"#.to_vec();
        assert_eq!(s.input(rec.clone()).unwrap(), b"[1,2]");
        let out = s.output(b"[[0.2,0.8]]", &AT[..1], &[rec]).unwrap();
        assert_eq!(out, b"{\"id\":3,\"SageMakerOutput\":[0.2,0.8]}\n");
    }

    #[test]
    fn filters_that_match_nothing_name_the_record() {
        let s = shaping(Some("$.nope"), None, false, "application/json", None);
        let e = s.input(br#"{"a":1}"#.to_vec()).unwrap_err();
        assert!(
            e.starts_with("InputFilter $.nope matches nothing in the record"),
            "{e}"
        );
        let s = shaping(None, Some("$[5]"), false, "text/csv", Some("text/csv"));
        let (at, e) = s.output(b"1,2\n3,4\n", &AT, &[]).unwrap_err();
        assert_eq!(at, Some(Position::Line(1)));
        assert!(
            e.starts_with("OutputFilter $[5] matches nothing in the model's answer"),
            "{e}"
        );
        let (at, e) = s.output(b"1\n2\n3\n", &AT, &[]).unwrap_err();
        assert_eq!(at, Some(Position::Line(1)));
        assert!(e.contains("3 lines for a batch of 2"), "{e}");
    }

    #[test]
    fn bad_filters_are_refused_up_front() {
        let e = Shaping::new(&ShapingSpec {
            input_filter: Some("features"),
            output_filter: None,
            join_input: false,
            content_type: None,
            accept: None,
            assemble_lines: false,
        })
        .unwrap_err();
        assert!(e.to_string().contains("must start with $"), "{e}");
    }
}
