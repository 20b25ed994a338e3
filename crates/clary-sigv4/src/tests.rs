use super::*;
use chrono::TimeZone;

const AK: &str = "AKIDEXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn at(s: &str) -> DateTime<Utc> {
    parse_amz_date(s).unwrap()
}

fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (http::Method, http::Uri, http::HeaderMap) {
    let uri: http::Uri = url.parse().unwrap();
    let mut map = http::HeaderMap::new();
    map.insert("host", uri.authority().unwrap().as_str().parse().unwrap());
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (method.parse().unwrap(), uri, map)
}

fn lookup(k: &str) -> Option<String> {
    (k == AK).then(|| SK.to_string())
}

// Signed by botocore 1.44.8 (SigV4Auth) for the SageMaker JSON API.
#[test]
fn verifies_botocore_json_request() {
    let (m, u, h) = request(
        "POST",
        "http://127.0.0.1:7070/",
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "SageMaker.ListTrainingJobs"),
            ("x-amz-date", "20261124T220314Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/sagemaker/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=ae90d1862ac25d358dde74853927e090409235112e2e9ab1278c335d2bf593f9",
            ),
        ],
    );
    let auth = verify(
        &m,
        &u,
        &h,
        br#"{"MaxResults": 5}"#,
        at("20261124T220500Z"),
        lookup,
    )
    .unwrap();
    assert_eq!(auth.service, "sagemaker");
    assert_eq!(auth.region, "us-east-1");
    // One changed byte of the body breaks it.
    let err = verify(
        &m,
        &u,
        &h,
        br#"{"MaxResults": 6}"#,
        at("20261124T220500Z"),
        lookup,
    );
    assert_eq!(err.unwrap_err(), AuthError::SignatureMismatch);
}

// Signed by botocore for SageMaker Runtime (InvokeEndpoint).
#[test]
fn verifies_botocore_runtime_request() {
    let (m, u, h) = request(
        "POST",
        "http://127.0.0.1:7070/endpoints/my-ep/invocations",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("x-amz-date", "20261124T220314Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/sagemaker/aws4_request, SignedHeaders=accept;content-type;host;x-amz-date, Signature=9a980beaa34d33067ca99bfd317f89d56fbacd1d4fc01309e11e97b17bc42b5e",
            ),
        ],
    );
    verify(&m, &u, &h, b"[[1.0, 2.0]]", at("20261124T220314Z"), lookup).unwrap();
}

// Signed by botocore: encoded path segments and a repeated, encoded query parameter.
#[test]
fn verifies_botocore_query_and_path_encoding() {
    let (m, u, h) = request(
        "GET",
        "http://localhost:7070/a%20b/c?b=2&a=x%2Fy&a=1",
        &[
            ("x-amz-date", "20261124T220314Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/logs/aws4_request, SignedHeaders=host;x-amz-date, Signature=20d105a92aff0379ef0196eed9685a8223d9e848f284b4cf85632d9356f094dd",
            ),
        ],
    );
    verify(&m, &u, &h, b"", at("20261124T220314Z"), lookup).unwrap();
}

#[test]
fn rejects_unknown_key_missing_header_and_skew() {
    let (m, u, mut h) = request(
        "POST",
        "http://127.0.0.1:7070/",
        &[("x-amz-date", "20261124T220314Z")],
    );
    assert_eq!(
        verify(&m, &u, &h, b"", at("20261124T220314Z"), lookup).unwrap_err(),
        AuthError::Missing
    );
    h.insert(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=NOPE/20261124/us-east-1/sagemaker/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
            .parse()
            .unwrap(),
    );
    assert_eq!(
        verify(&m, &u, &h, b"", at("20261124T220314Z"), lookup).unwrap_err(),
        AuthError::UnknownAccessKey
    );
    let err = verify(&m, &u, &h, b"", at("20261124T234500Z"), lookup).unwrap_err();
    assert_eq!(err.code(), "InvalidSignatureException");
}

#[test]
fn signer_output_verifies_and_matches_aws_test_vector_chain() {
    // The HMAC chain itself, against AWS's documented "get-vanilla" vector.
    let canonical = "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(
        signature(
            SK,
            "20150830T123600Z",
            "20150830",
            "us-east-1",
            "service",
            canonical
        ),
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
    let signer = Signer {
        access_key: AK.into(),
        secret_key: SK.into(),
        region: "us-east-1".into(),
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let uri: http::Uri = "http://127.0.0.1:7070/".parse().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-amz-target",
        "SageMaker.DescribeTrainingJob".parse().unwrap(),
    );
    headers.insert(
        "content-type",
        "application/x-amz-json-1.1".parse().unwrap(),
    );
    let body = br#"{"TrainingJobName":"j"}"#;
    signer
        .sign(
            "sagemaker",
            &http::Method::POST,
            &uri,
            &mut headers,
            body,
            now,
        )
        .unwrap();
    let auth = verify(&http::Method::POST, &uri, &headers, body, now, lookup).unwrap();
    assert_eq!(auth.service, "sagemaker");
}

// A DescribeTrainingJob signed without X-Amz-Target must not be replayable as StopTrainingJob.
#[test]
fn an_unsigned_target_is_refused_before_the_body_is_needed() {
    let signer = Signer {
        access_key: AK.into(),
        secret_key: SK.into(),
        region: "us-east-1".into(),
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let uri: http::Uri = "http://127.0.0.1:7070/".parse().unwrap();
    let mut headers = http::HeaderMap::new();
    let body = br#"{"TrainingJobName":"j"}"#;
    signer
        .sign(
            "sagemaker",
            &http::Method::POST,
            &uri,
            &mut headers,
            body,
            now,
        )
        .unwrap();
    headers.insert("x-amz-target", "SageMaker.StopTrainingJob".parse().unwrap());
    let err = verify(&http::Method::POST, &uri, &headers, body, now, lookup).unwrap_err();
    assert_eq!(err, AuthError::UnsignedHeader("X-Amz-Target"));
    assert_eq!(err.code(), "InvalidSignatureException");
    assert_eq!(
        err.to_string(),
        "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."
    );
    // The header part alone decides it, and a good header part leaves only the body to check.
    assert!(check_headers(&headers, now, lookup).is_err());
    headers.remove("x-amz-target");
    let pending = check_headers(&headers, now, lookup).unwrap();
    assert_eq!(pending.authorization().service, "sagemaker");
    assert_eq!(
        pending
            .verify(&http::Method::POST, &uri, &headers, b"{}")
            .unwrap_err(),
        AuthError::SignatureMismatch
    );
}

#[test]
fn the_claimed_service_is_read_from_a_malformed_authorization_too() {
    let with = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", v.parse().unwrap());
        scope_service(&h)
    };
    assert_eq!(
        with("AWS4-HMAC-SHA256 Credential=AK/20261124/us-east-1/sts/aws4_request").as_deref(),
        Some("sts")
    );
    assert_eq!(
        with("AWS4-HMAC-SHA256 Credential=AK/20261124/us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=00").as_deref(),
        Some("sagemaker")
    );
    assert_eq!(with("AWS4-HMAC-SHA256 garbage"), None);
    assert_eq!(with("AWS4-HMAC-SHA256 Credential=AK/2026"), None);
    assert_eq!(scope_service(&http::HeaderMap::new()), None);
}

#[test]
fn presigned_url_matches_aws_published_example() {
    // "Authenticating Requests: Using Query Parameters" in the S3 API reference.
    let signer = Signer {
        access_key: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        region: "us-east-1".into(),
    };
    let now = chrono::NaiveDate::from_ymd_opt(2013, 5, 24)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let url = signer
        .presign(
            "s3",
            &http::Method::GET,
            "https://examplebucket.s3.amazonaws.com/test.txt",
            86400,
            now,
        )
        .unwrap();
    assert_eq!(
        url,
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
         &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    );
}
