//! CloudWatch metrics of training jobs (namespace `/aws/sagemaker/TrainingJobs`, dimensions
//! `TrainingJobName` and optionally `Host`) and of endpoints (namespace `AWS/SageMaker`,
//! dimensions `EndpointName` and `VariantName`: `Invocations`, `Invocation4XXErrors`,
//! `Invocation5XXErrors`, `ModelLatency`, `OverheadLatency`): `GetMetricStatistics`, `GetMetricData` and
//! `ListMetrics`, over the AWS JSON 1.0 protocol current botocore sends
//! (`X-Amz-Target: GraniteServiceVersion20100801.<Op>`) and the query protocol older clients
//! send. A query request is read into the same JSON shape and its answer written as XML, so
//! both protocols share one handler.

use crate::errors::ApiError;
use crate::wire::str_field;
use crate::{ApiState, Body, full, request_id};
use clary_control::domain::endpoint_metrics::EndpointMetric;
use clary_control::domain::metrics::{Datapoint, datapoints};
use clary_control::metrics::TRAINING_NAMESPACE;
use clary_control::store::metrics::SampleQuery;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

/// `X-Amz-Target` prefix of CloudWatch's JSON 1.0 protocol.
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";
const XML_NAMESPACE: &str = "http://monitoring.amazonaws.com/doc/2010-08-01/";
const STATISTICS: [&str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];

fn invalid(code: &'static str, message: String) -> ApiError {
    ApiError::CloudWatchParameter { code, message }
}

/// A time as botocore sends it: epoch seconds (JSON) or ISO 8601 (query).
fn time(v: Option<&Value>, name: &str) -> Result<f64, ApiError> {
    let missing = || {
        invalid(
            "MissingParameter",
            format!("The parameter {name} is required."),
        )
    };
    match v.ok_or_else(missing)? {
        Value::Number(n) => n.as_f64().ok_or_else(missing),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros() as f64 / 1e6)
            .or_else(|_| s.parse::<f64>())
            .map_err(|_| {
                invalid(
                    "InvalidParameterValue",
                    format!("The parameter {name} must be a timestamp; got {s:?}"),
                )
            }),
        other => Err(invalid(
            "InvalidParameterValue",
            format!("The parameter {name} must be a timestamp; got {other}"),
        )),
    }
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The training job and host a metric's dimensions name; `None` when they name no training
/// job metric (a dimension Clary does not publish).
fn series_of(dimensions: Option<&Value>) -> Option<(String, Option<String>)> {
    let mut job = None;
    let mut host = None;
    for d in dimensions.and_then(Value::as_array).into_iter().flatten() {
        match (str_field(d, "Name"), str_field(d, "Value")) {
            (Some("TrainingJobName"), Some(v)) => job = Some(v.to_string()),
            (Some("Host"), Some(v)) => host = Some(v.to_string()),
            _ => return None,
        }
    }
    let job = job?;
    // SageMaker's Host values read `<job>/algo-1`.
    let host = host.map(|h| {
        h.strip_prefix(&format!("{job}/"))
            .map_or(h.clone(), str::to_string)
    });
    Some((job, host))
}

/// CloudWatch's namespace of SageMaker's endpoint metrics.
pub const ENDPOINT_NAMESPACE: &str = "AWS/SageMaker";

/// The endpoint and variant a metric's dimensions name; `None` when they name something else.
fn endpoint_series_of(dimensions: Option<&Value>) -> Option<(String, Option<String>)> {
    let mut endpoint = None;
    let mut variant = None;
    for d in dimensions.and_then(Value::as_array).into_iter().flatten() {
        match (str_field(d, "Name"), str_field(d, "Value")) {
            (Some("EndpointName"), Some(v)) => endpoint = Some(v.to_string()),
            (Some("VariantName"), Some(v)) => variant = Some(v.to_string()),
            _ => return None,
        }
    }
    Some((endpoint?, variant))
}

/// The datapoints of one endpoint metric.
fn endpoint_points(
    state: &ApiState,
    metric: &Value,
    start: f64,
    end: f64,
    period: f64,
) -> Result<Vec<Datapoint>, ApiError> {
    let Some(name) = str_field(metric, "MetricName") else {
        return Err(invalid(
            "MissingParameter",
            "The parameter MetricName is required.".into(),
        ));
    };
    let (Some(which), Some((endpoint, variant))) = (
        EndpointMetric::parse(name),
        endpoint_series_of(metric.get("Dimensions")),
    ) else {
        return Ok(Vec::new());
    };
    Ok(state.control.endpoint_metrics.datapoints(
        &endpoint,
        variant.as_deref(),
        which,
        start,
        end,
        period,
    )?)
}

/// The unit CloudWatch reports a metric's datapoints in.
fn unit_of(metric: &Value) -> &'static str {
    match (
        str_field(metric, "Namespace"),
        str_field(metric, "MetricName"),
    ) {
        (Some(ENDPOINT_NAMESPACE), Some(name)) => {
            EndpointMetric::parse(name).map_or("None", EndpointMetric::unit)
        }
        _ => "None",
    }
}

/// The datapoints of one metric over `[start, end)` by `period`.
fn points(
    state: &ApiState,
    metric: &Value,
    start: f64,
    end: f64,
    period: f64,
) -> Result<Vec<Datapoint>, ApiError> {
    if str_field(metric, "Namespace") == Some(ENDPOINT_NAMESPACE) {
        return endpoint_points(state, metric, start, end, period);
    }
    if str_field(metric, "Namespace") != Some(TRAINING_NAMESPACE) {
        return Ok(Vec::new());
    }
    let Some(name) = str_field(metric, "MetricName") else {
        return Err(invalid(
            "MissingParameter",
            "The parameter MetricName is required.".into(),
        ));
    };
    let Some((job, host)) = series_of(metric.get("Dimensions")) else {
        return Ok(Vec::new());
    };
    let samples = state.control.metrics.samples(SampleQuery {
        job: &job,
        metric: name,
        host: host.as_deref(),
        start,
        end,
    })?;
    Ok(datapoints(&samples, start, end, period))
}

fn period(v: Option<&Value>) -> Result<f64, ApiError> {
    match number(v) {
        Some(p) if p >= 1.0 => Ok(p),
        _ => Err(invalid(
            "InvalidParameterValue",
            "The parameter Period must be a whole number of seconds, 1 or more (60 or a multiple of it for data older than 3 hours)".into(),
        )),
    }
}

fn statistic(d: &Datapoint, stat: &str) -> Option<f64> {
    Some(match stat {
        "SampleCount" => d.sample_count,
        "Average" => d.average(),
        "Sum" => d.sum,
        "Minimum" => d.minimum,
        "Maximum" => d.maximum,
        _ => return None,
    })
}

fn get_metric_statistics(state: &ApiState, body: &Value) -> Result<Value, ApiError> {
    let start = time(body.get("StartTime"), "StartTime")?;
    let end = time(body.get("EndTime"), "EndTime")?;
    let period = period(body.get("Period"))?;
    let stats: Vec<&str> = body
        .get("Statistics")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if stats.is_empty() || stats.iter().any(|s| !STATISTICS.contains(s)) {
        return Err(invalid(
            "InvalidParameterCombination",
            format!(
                "Statistics must name one or more of {}; got {stats:?}",
                STATISTICS.join(", ")
            ),
        ));
    }
    let datapoints: Vec<Value> = points(state, body, start, end, period)?
        .iter()
        .map(|d| {
            let mut p = Map::new();
            p.insert("Timestamp".into(), json!(d.timestamp));
            for s in &stats {
                p.insert((*s).into(), json!(statistic(d, s)));
            }
            p.insert("Unit".into(), json!(unit_of(body)));
            Value::Object(p)
        })
        .collect();
    Ok(json!({"Label": str_field(body, "MetricName"), "Datapoints": datapoints}))
}

fn get_metric_data(state: &ApiState, body: &Value) -> Result<Value, ApiError> {
    let start = time(body.get("StartTime"), "StartTime")?;
    let end = time(body.get("EndTime"), "EndTime")?;
    let newest_first = str_field(body, "ScanBy") != Some("TimestampAscending");
    let queries = body
        .get("MetricDataQueries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut results = Vec::new();
    for q in &queries {
        let id = str_field(q, "Id").unwrap_or_default();
        let Some(stat) = q.get("MetricStat") else {
            return Err(invalid(
                "InvalidParameterValue",
                format!(
                    "Query {id}: Clary answers MetricStat queries; metric math (Expression) is not served"
                ),
            ));
        };
        let metric = stat.get("Metric").cloned().unwrap_or(Value::Null);
        let name = str_field(stat, "Stat").unwrap_or("Average");
        let mut pts: Vec<(f64, f64)> =
            points(state, &metric, start, end, period(stat.get("Period"))?)?
                .iter()
                .filter_map(|d| Some((d.timestamp, statistic(d, name)?)))
                .collect();
        if newest_first {
            pts.reverse();
        }
        results.push(json!({
            "Id": id,
            "Label": str_field(q, "Label").or_else(|| str_field(&metric, "MetricName")),
            "Timestamps": pts.iter().map(|p| p.0).collect::<Vec<_>>(),
            "Values": pts.iter().map(|p| p.1).collect::<Vec<_>>(),
            "StatusCode": "Complete",
        }));
    }
    Ok(json!({"MetricDataResults": results, "Messages": []}))
}

/// `ListMetrics` of `AWS/SageMaker`: every endpoint metric of each variant with invocations.
fn endpoint_metric_list(state: &ApiState, body: &Value) -> Result<Vec<Value>, ApiError> {
    let mut endpoint = None;
    let mut variant = None;
    for d in body
        .get("Dimensions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match str_field(d, "Name") {
            Some("EndpointName") => endpoint = str_field(d, "Value"),
            Some("VariantName") => variant = str_field(d, "Value"),
            _ => return Ok(Vec::new()),
        }
    }
    let wanted = str_field(body, "MetricName");
    let mut out = Vec::new();
    for (e, v) in state.control.endpoint_metrics.series(endpoint)? {
        if variant.is_some_and(|want| want != v) {
            continue;
        }
        for m in EndpointMetric::ALL {
            if wanted.is_some_and(|w| w != m.name()) {
                continue;
            }
            out.push(
                json!({"Namespace": ENDPOINT_NAMESPACE, "MetricName": m.name(),
                "Dimensions": [{"Name": "EndpointName", "Value": e},
                               {"Name": "VariantName", "Value": v}]}),
            );
        }
    }
    Ok(out)
}

fn list_metrics(state: &ApiState, body: &Value) -> Result<Value, ApiError> {
    let namespace = str_field(body, "Namespace");
    let mut endpoint_metrics = Vec::new();
    if namespace.is_none_or(|n| n == ENDPOINT_NAMESPACE) {
        endpoint_metrics = endpoint_metric_list(state, body)?;
    }
    if namespace == Some(ENDPOINT_NAMESPACE) {
        return Ok(json!({"Metrics": endpoint_metrics}));
    }
    if namespace.is_some_and(|n| n != TRAINING_NAMESPACE) {
        return Ok(json!({"Metrics": []}));
    }
    let mut job_filter = None;
    for d in body
        .get("Dimensions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if str_field(d, "Name") == Some("TrainingJobName") {
            job_filter = str_field(d, "Value");
        }
    }
    let series = state
        .control
        .metrics
        .series(str_field(body, "MetricName"), job_filter)?;
    let mut metrics = Vec::new();
    let mut last: Option<(&str, &str)> = None;
    for s in &series {
        let dim = |name: &str, value: String| json!({"Name": name, "Value": value});
        if last != Some((s.job.as_str(), s.metric.as_str())) {
            metrics.push(
                json!({"Namespace": TRAINING_NAMESPACE, "MetricName": s.metric,
                                "Dimensions": [dim("TrainingJobName", s.job.clone())]}),
            );
            last = Some((&s.job, &s.metric));
        }
        metrics.push(
            json!({"Namespace": TRAINING_NAMESPACE, "MetricName": s.metric,
                            "Dimensions": [dim("Host", format!("{}/{}", s.job, s.host)),
                                           dim("TrainingJobName", s.job.clone())]}),
        );
    }
    metrics.extend(endpoint_metrics);
    Ok(json!({"Metrics": metrics}))
}

/// One CloudWatch operation on a JSON-shaped request.
pub fn handle(state: &ApiState, op: &str, body: &Value) -> Result<Value, ApiError> {
    match op {
        "GetMetricStatistics" => get_metric_statistics(state, body),
        "GetMetricData" => get_metric_data(state, body),
        "ListMetrics" => list_metrics(state, body),
        other => Err(ApiError::UnknownOperation {
            service: "CloudWatch",
            operation: other.to_string(),
            served: "GetMetricStatistics, GetMetricData and ListMetrics for training jobs and endpoints",
        }),
    }
}

/// Query parameters (`A.member.1.B=x`) as the JSON value the JSON protocol would carry.
fn query_to_json(params: &[(String, String)]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in params {
        if key == "Action" || key == "Version" {
            continue;
        }
        let mut at = &mut root;
        let parts: Vec<&str> = key.split('.').collect();
        let mut i = 0;
        while i < parts.len() {
            let part = parts[i];
            if part == "member" && i + 1 < parts.len() {
                let n: usize = parts[i + 1].parse().unwrap_or(1).max(1);
                if !at.is_array() {
                    *at = Value::Array(Vec::new());
                }
                let list = at.as_array_mut().expect("made an array");
                while list.len() < n {
                    list.push(Value::Null);
                }
                at = &mut list[n - 1];
                i += 2;
                continue;
            }
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            at = at
                .as_object_mut()
                .expect("made an object")
                .entry(part)
                .or_insert(Value::Null);
            i += 1;
        }
        *at = Value::String(value.clone());
    }
    root
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn iso(t: f64) -> String {
    chrono::DateTime::from_timestamp_micros((t * 1e6) as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A JSON answer as the query protocol's XML; `Timestamp`(s) become ISO 8601.
fn to_xml(name: &str, v: &Value, out: &mut String) {
    let timestamps = name == "Timestamp" || name == "Timestamps";
    match v {
        Value::Null => {}
        Value::Array(items) => {
            out.push_str(&format!("<{name}>"));
            for item in items {
                match item {
                    Value::Number(n) if timestamps => {
                        out.push_str(&format!(
                            "<member>{}</member>",
                            iso(n.as_f64().unwrap_or(0.0))
                        ));
                    }
                    _ => to_xml("member", item, out),
                }
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::Object(m) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in m {
                to_xml(k, v, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::Number(n) if timestamps => {
            out.push_str(&format!(
                "<{name}>{}</{name}>",
                iso(n.as_f64().unwrap_or(0.0))
            ));
        }
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", xml_escape(s))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

/// A query-protocol call (`Action=GetMetricStatistics&...`), answered in XML.
pub fn handle_query(state: &ApiState, body: &[u8]) -> Response<Body> {
    let params = &crate::query::form(body);
    let action = params
        .iter()
        .find(|(k, _)| k == "Action")
        .map_or("", |(_, v)| v.as_str());
    match handle(state, action, &query_to_json(params)) {
        Ok(v) => {
            let mut result = String::new();
            to_xml(&format!("{action}Result"), &v, &mut result);
            let body = format!(
                "<{action}Response xmlns=\"{XML_NAMESPACE}\">{result}<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
                request_id()
            );
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/xml")
                .body(full(body))
                .expect("static response parts are valid")
        }
        Err(e) => {
            let (status, code) = e.status_and_code();
            crate::query::error(status, code, &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_become_the_json_shape() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let v = query_to_json(&[
            p("Action", "GetMetricStatistics"),
            p("MetricName", "loss"),
            p("Dimensions.member.1.Name", "TrainingJobName"),
            p("Dimensions.member.1.Value", "j"),
            p("Statistics.member.1", "Average"),
            p("Statistics.member.2", "Maximum"),
        ]);
        assert_eq!(
            v,
            json!({"MetricName": "loss",
                   "Dimensions": [{"Name": "TrainingJobName", "Value": "j"}],
                   "Statistics": ["Average", "Maximum"]})
        );
    }

    #[test]
    fn answers_become_query_xml_with_iso_timestamps() {
        let mut out = String::new();
        to_xml(
            "GetMetricStatisticsResult",
            &json!({"Label": "loss", "Datapoints": [{"Timestamp": 0.0, "Average": 1.5}]}),
            &mut out,
        );
        assert_eq!(
            out,
            "<GetMetricStatisticsResult><Label>loss</Label><Datapoints><member><Timestamp>1970-01-01T00:00:00.000Z</Timestamp><Average>1.5</Average></member></Datapoints></GetMetricStatisticsResult>"
        );
    }

    #[test]
    fn host_dimensions_read_as_sagemaker_writes_them() {
        let dims = json!([{"Name": "Host", "Value": "j/algo-2"}, {"Name": "TrainingJobName", "Value": "j"}]);
        assert_eq!(
            series_of(Some(&dims)),
            Some(("j".into(), Some("algo-2".into())))
        );
        let other = json!([{"Name": "EndpointName", "Value": "e"}]);
        assert_eq!(series_of(Some(&other)), None);
    }
}
